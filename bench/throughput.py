"""Throughput: zbatch against bare client loops, on the zero-latency fake server.

    python bench/throughput.py                       # 5,000 rows, concurrency 8 and 64, 3 reps
    python bench/throughput.py --rows 2000 --reps 1 --concurrency 64
    python bench/throughput.py --latency-case        # also: 500 ms server, concurrency 256
    python bench/throughput.py --rows 20000 --concurrency 64 --before OLD_VENV/bin/zbatch \
        --clients aiohttp,zbatch,zbatch-cli,zbatch-cli-before   # before/after, CPU vs aiohttp

Clients (each sends the same rows, the body zbatch sends, and parses the JSON answer):

  httpx-default    bare anyio + httpx.AsyncClient, httpx's own transport (httpcore)
  httpx2           the same loop with httpx2 (the maintained fork) and its own transport;
                   listed only when httpx2 is installed
  httpx-aiohttp    bare anyio + httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport)
  httpx-zbatch     bare anyio + httpx.AsyncClient(transport=zbatch.transport.aio.AiohttpTransport):
                   the HTTP stack zbatch ships, without zbatch
  aiohttp          bare asyncio + aiohttp.ClientSession
  http11           bare asyncio + zbatch.transport.http11.Http11Transport.post: the transport
                   zbatch ships for plain http://, without zbatch
  zbatch           zbatch.run in this process, the transport zbatch ships (for this http://
                   server: its own HTTP/1.1 client on httptools), with the answer journal
  zbatch-aiohttp   the same with AiohttpTransport injected (what https and proxies use, and
                   what zbatch shipped for every URL before issue 25's second round)
  zbatch-nojournal the same with journal = false: the journal's cost is the difference
  zbatch-budget    the same with a budget (max_cost): every request is first reserved in the
                   OUTDIR's shared reservations (OUTDIR/budget/), whose cost is the difference
  zbatch-cli       the installed ``zbatch run`` console script as a subprocess (the figure
                   includes interpreter start-up and imports)
  zbatch-cli-before the same with the console script given by ``--before`` (another tree in
                   its own venv), interleaved with this tree's: before/after in one run
  zbatch-httpcore  zbatch.run in this process with httpx's own transport injected
                   (transport=httpx.AsyncHTTPTransport): the transport's effect on zbatch

A bare loop is N workers pulling row numbers from one shared iterator. zbatch runs with
everything on: results and error-log part files, checkpoints (part_rows / part_seconds),
progress (log lines, as off a terminal) and run.log.

One fake server subprocess serves the whole zero-latency run (its stats are reset before
each measurement, and every measurement checks that the server answered exactly --rows
requests); the latency case gets its own server started with --latency. Clients are
interleaved: each repetition runs every client once, so drift hits all of them alike.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import httpx_aiohttp
from common import (
    Server,
    arg_parser,
    bench_env,
    cpu_seconds,
    fake_server,
    load_average,
    make_jsonl,
    median,
    print_table,
    prompt_for,
    ratio,
    request_body,
    run_child,
    say,
    self_cpu_seconds,
    spread,
    start,
    table,
    work_dir,
    zbatch_cli,
    zbatch_overrides,
)

import zbatch
from zbatch.progress import LogProgress
from zbatch.transport.aio import AiohttpTransport
from zbatch.transport.http11 import Http11Transport

HEADERS = {"Content-Type": "application/json"}
# Issue 25: the CLI at c=1024 and 500 ms reaches this share of the concurrency / latency bound.
LATENCY_TARGET = 0.97


# --- bare loops -----------------------------------------------------------------------------


def limits(concurrency: int, client_module: Any = httpx) -> Any:
    """A pool of ``concurrency`` connections, all kept alive (httpx's or httpx2's Limits)."""
    return client_module.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def _answer(raw: bytes) -> str:
    data = json.loads(raw)
    return data["choices"][0]["message"]["content"]


async def httpx_loop(
    url: str,
    rows: int,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None,
    client_module: Any = httpx,  # or httpx2, which has the same API
) -> int:
    ok = 0
    numbers = iter(range(rows))
    pool = limits(concurrency, client_module)
    async with client_module.AsyncClient(limits=pool, transport=transport, timeout=60.0) as client:

        async def worker() -> None:
            nonlocal ok
            for i in numbers:
                body = json.dumps(request_body(prompt_for(i))).encode()
                response = await client.post(url, content=body, headers=HEADERS)
                if response.status_code == 200 and _answer(response.content):
                    ok += 1

        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(worker)
    return ok


async def _aiohttp_loop(url: str, rows: int, concurrency: int) -> int:
    ok = 0
    numbers = iter(range(rows))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal ok
            for i in numbers:
                body = json.dumps(request_body(prompt_for(i))).encode()
                async with session.post(url, data=body, headers=HEADERS) as response:
                    raw = await response.read()
                    if response.status == 200 and _answer(raw):
                        ok += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def _http11_loop(url: str, rows: int, concurrency: int) -> int:
    ok = 0
    numbers = iter(range(rows))
    transport = Http11Transport(httpx.URL(url), max_connections=concurrency)
    timeouts: dict[str, float | None] = {"total": 60.0}

    async def worker() -> None:
        nonlocal ok
        for i in numbers:
            body = json.dumps(request_body(prompt_for(i))).encode()
            headers = [*HEADERS.items(), ("Content-Length", str(len(body)))]
            reply = await transport.post(url, headers, body, timeouts)
            if reply.status_code == 200 and _answer(reply.content):
                ok += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await transport.aclose()
    return ok


# A client runs the rows and returns (rows answered, CPU seconds of a child process or None
# when it ran in this process, whose own CPU time is then measured).
# What a client run gives: rows answered, the child's CPU seconds (None: this process's), and
# requests it chose to send beyond one per row (zbatch's hedges of a stuck attempt).
Done = tuple[int, float | None, int]


def bare_httpx_default(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    return anyio.run(httpx_loop, server.url, rows, concurrency, None), None, 0


def bare_httpx_aiohttp(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    transport = httpx_aiohttp.AiohttpTransport(limits=limits(concurrency))
    return anyio.run(httpx_loop, server.url, rows, concurrency, transport), None, 0


def bare_httpx2(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    import httpx2  # the maintained fork; optional (pip install -e ".[bench]")

    return anyio.run(httpx_loop, server.url, rows, concurrency, None, httpx2), None, 0


def bare_httpx_zbatch(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    transport = AiohttpTransport(max_connections=concurrency)
    return anyio.run(httpx_loop, server.url, rows, concurrency, transport), None, 0


def bare_aiohttp(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    return asyncio.run(_aiohttp_loop(server.url, rows, concurrency)), None, 0


def bare_http11(server: Server, rows: int, concurrency: int, _: Path) -> Done:
    return asyncio.run(_http11_loop(server.url, rows, concurrency)), None, 0


# --- zbatch ---------------------------------------------------------------------------------


def run_zbatch(
    base_url: str,
    input_path: Path,
    outdir: Path,
    concurrency: int,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: Any,
) -> tuple[int, int]:
    """zbatch.run in this process (rows answered, hedges sent); transport None = the shipped
    one."""
    overrides = zbatch_overrides(input_path, outdir, base_url, concurrency, **settings)
    job = zbatch.Job.from_toml(None, **overrides)
    result = zbatch.run(job, transport=transport, progress=LogProgress(job.log_every))
    if result.exit_code != 0:
        raise RuntimeError(f"zbatch exited {result.exit_code}: {result.stopped}")
    return result.stats.ok, result.stats.hedged


def zbatch_shipped(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    ok, hedged = run_zbatch(server.base_url, work / "input.jsonl", outdir, concurrency)
    return ok, None, hedged


def zbatch_aiohttp(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    transport = AiohttpTransport(max_connections=concurrency)
    ok, hedged = run_zbatch(server.base_url, work / "input.jsonl", outdir, concurrency, transport)
    return ok, None, hedged


def zbatch_no_journal(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    """zbatch with the answer journal off (--no-journal): what the journal costs."""
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    ok, hedged = run_zbatch(
        server.base_url, work / "input.jsonl", outdir, concurrency, journal=False
    )
    return ok, None, hedged


def zbatch_budget(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    """zbatch with a budget no run reaches: what reserving each request costs."""
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    ok, hedged = run_zbatch(
        server.base_url, work / "input.jsonl", outdir, concurrency, max_cost=1e6
    )
    return ok, None, hedged


def zbatch_httpcore(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    transport = httpx.AsyncHTTPTransport(limits=limits(concurrency))
    ok, hedged = run_zbatch(server.base_url, work / "input.jsonl", outdir, concurrency, transport)
    return ok, None, hedged


def zbatch_subprocess(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    outdir = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    cmd = zbatch_cli(work / "input.jsonl", outdir, server.base_url, concurrency)
    child = run_child(cmd, env=bench_env(), workdir=work)
    child.check("zbatch CLI")
    summary = json.loads((outdir / "summary.json").read_text())
    return int(summary["rows"]["ok"]), child.cpu_seconds, int(summary["hedged_requests"])


def zbatch_before(server: Server, rows: int, concurrency: int, work: Path) -> Done:
    """zbatch-cli with another tree's console script (``--before``): before/after in one run."""
    outdir = Path(tempfile.mkdtemp(prefix="before-", dir=work))
    cmd = zbatch_cli(work / "input.jsonl", outdir, server.base_url, concurrency)
    cmd[0] = BEFORE[0]
    child = run_child(cmd, env=bench_env(), workdir=work)
    child.check("zbatch CLI (before)")
    summary = json.loads((outdir / "summary.json").read_text())
    return int(summary["rows"]["ok"]), child.cpu_seconds, int(summary["hedged_requests"])


BEFORE: list[str] = []  # the --before console script, once parsed

Client = Callable[[Server, int, int, Path], Done]

CLIENTS: list[tuple[str, Client]] = [
    ("httpx-default", bare_httpx_default),
    *([("httpx2", bare_httpx2)] if importlib.util.find_spec("httpx2") else []),
    ("httpx-aiohttp", bare_httpx_aiohttp),
    ("httpx-zbatch", bare_httpx_zbatch),
    ("aiohttp", bare_aiohttp),
    ("http11", bare_http11),
    ("zbatch", zbatch_shipped),
    ("zbatch-aiohttp", zbatch_aiohttp),
    ("zbatch-nojournal", zbatch_no_journal),
    ("zbatch-budget", zbatch_budget),
    ("zbatch-cli", zbatch_subprocess),
    ("zbatch-cli-before", zbatch_before),
    ("zbatch-httpcore", zbatch_httpcore),
]


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One measurement: the client's rate and cost, and what the server saw meanwhile."""

    rate: float
    cpu_us: float  # client CPU microseconds per row (this process, or the zbatch child)
    connections: int  # TCP connections the server accepted
    max_inflight: int  # most requests in flight at once, as the server saw them
    server_cpu: float  # server CPU seconds per wall second (1.0 = one core busy)
    load: float  # 1-minute load average when the measurement ended
    arrival_rate: float  # requests/s as the server saw them arrive, first to last (no start-up)


def measure(server: Server, client: Client, rows: int, concurrency: int, work: Path) -> Sample:
    """One client run; checks that the server answered every row exactly once."""
    server.reset_stats()
    gc.collect()
    server_before = cpu_seconds(server.process.pid)
    self_before = self_cpu_seconds()
    started = time.perf_counter()
    ok, child_cpu, hedged = client(server, rows, concurrency, work)
    seconds = time.perf_counter() - started
    client_cpu = child_cpu if child_cpu is not None else self_cpu_seconds() - self_before
    server_cpu = cpu_seconds(server.process.pid) - server_before
    stats = server.stats()
    sent = rows + hedged
    if ok != rows or stats["successes"] != sent or stats["requests"] != sent:
        raise RuntimeError(
            f"expected {rows} answered rows and {hedged} hedges; client ok {ok}, server "
            f"requests {stats['requests']}, successes {stats['successes']}"
        )
    starts = stats["request_starts"]
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    return Sample(
        rate=rows / seconds,
        arrival_rate=(len(starts) - 1) / span if span > 0 else float("nan"),
        cpu_us=client_cpu / rows * 1e6,
        connections=stats["connections"],
        max_inflight=stats["max_inflight_seen"],
        server_cpu=server_cpu / seconds,
        load=load_average(),
    )


Samples = dict[tuple[str, int], list[Sample]]


def run_matrix(
    server: Server, rows: int, levels: list[int], reps: int, chosen: list[tuple[str, Client]]
) -> Samples:
    samples: Samples = {}
    with work_dir("zbatch-bench-") as work:
        make_jsonl(work / "input.jsonl", rows)
        for rep in range(1, reps + 1):
            for concurrency in levels:
                for name, client in chosen:
                    s = measure(server, client, rows, concurrency, work)
                    samples.setdefault((name, concurrency), []).append(s)
                    say(
                        f"  rep {rep}/{reps} c={concurrency:<3} {name:<22} {s.rate:7,.0f} rows/s"
                        f" {s.cpu_us:6,.0f} us CPU/row | server: {s.connections} conns, max in"
                        f" flight {s.max_inflight}, cpu {s.server_cpu:.0%} | load {s.load:.1f}"
                    )
    return samples


def print_matrix(samples: Samples, levels: list[int], names: list[str]) -> None:
    rows = []
    for name in names:
        row: list[Any] = [name]
        for level in levels:
            values = samples.get((name, level), [])
            rates = [s.rate for s in values]
            row += [round(median(rates)), spread(rates), round(median([s.cpu_us for s in values]))]
        rows.append(row)
    headers = ["client"]
    for level in levels:
        headers += [f"c={level} rows/s", f"c={level} range", f"c={level} CPU us/row"]
    print(table(headers, rows))
    rows = []
    for name in names:
        row = [name]
        for level in levels:
            values = samples.get((name, level), [])
            row += [
                round(median([s.connections for s in values])),
                f"{median([s.server_cpu for s in values]):.0%}",
            ]
        rows.append(row)
    headers = ["client"]
    for level in levels:
        headers += [f"c={level} conns", f"c={level} server cpu"]
    print_table(
        "What the server saw (medians): TCP connections opened, server CPU share", headers, rows
    )
    loads = [s.load for values in samples.values() for s in values]
    print(f"\n1-min load average at the end of each measurement: {spread(loads)} ", end="")
    print("(2 cores; the benchmark itself accounts for about 1.3)")


def print_targets(samples: Samples, level: int) -> None:
    rates = {key: [s.rate for s in values] for key, values in samples.items()}

    def med(name: str) -> float | None:
        values = rates.get((name, level))
        return median(values) if values else None

    checks = [
        # (3): the same HTTP stack zbatch ships with, the bare default-httpx loop, bare aiohttp
        ("zbatch / bare httpx-zbatch (same stack)", "zbatch", "httpx-zbatch", 0.8),
        ("zbatch / bare httpx-default", "zbatch", "httpx-default", 4.0),
        ("zbatch / bare aiohttp", "zbatch", "aiohttp", 0.35),
        ("zbatch-cli / bare httpx-zbatch (same stack)", "zbatch-cli", "httpx-zbatch", 0.8),
        ("zbatch-cli / bare httpx-default", "zbatch-cli", "httpx-default", 4.0),
        ("zbatch-cli / bare aiohttp", "zbatch-cli", "aiohttp", 0.35),
        # not shipped: zbatch on httpx's own transport, against its own bare loop
        (
            "zbatch-httpcore / bare httpx-default (same stack)",
            "zbatch-httpcore",
            "httpx-default",
            0.8,
        ),
    ]
    rows = []
    for label, top, bottom, target in checks:
        a, b = med(top), med(bottom)
        if a is None or b is None:
            continue
        verdict = "meets" if a / b >= target else "misses"
        rows.append([label, ratio(a, b), f">= {target:g}x", verdict])
    title = f"Target ratios at concurrency {level} (medians):"
    print_table(title, ["ratio", "measured", "target", "verdict"], rows)


def print_cpu_ratios(samples: Samples, level: int, names: list[str]) -> None:
    """CPU per row of each zbatch client against the bare aiohttp loop's (issue 25: the CLI
    <= 1.25x, the in-process API <= 1.1x), medians of the same interleaved run."""
    base = samples.get(("aiohttp", level))
    if not base:
        return
    floor = median([s.cpu_us for s in base])
    rows = []
    for name in names:
        if not name.startswith("zbatch") or (name, level) not in samples:
            continue
        cpu = median([s.cpu_us for s in samples[(name, level)]])
        target = 1.25 if name.startswith("zbatch-cli") else 1.1
        rows.append([name, f"{cpu:,.0f}", f"{cpu / floor:.2f}x", f"<= {target:g}x"])
    title = f"CPU per row against the bare aiohttp loop ({floor:,.0f} us) at concurrency {level}:"
    print_table(title, ["client", "CPU us/row", "vs aiohttp", "issue 25"], rows)


def latency_case(
    rows: int, reps: int, chosen: list[tuple[str, Client]], concurrency: int = 256
) -> None:
    latency = 0.5
    bound = concurrency / latency
    say(f"latency case: server --latency {latency}, concurrency {concurrency}, {rows} rows")
    with fake_server(latency=latency) as server:
        samples = run_matrix(server, rows, [concurrency], reps, chosen)
    table_rows = []
    for name, _ in chosen:
        values = [s.rate for s in samples[(name, concurrency)]]
        inflight = median([s.max_inflight for s in samples[(name, concurrency)]])
        arrivals = median([s.arrival_rate for s in samples[(name, concurrency)]])
        value = median(values)
        verdict = "meets" if value >= LATENCY_TARGET * bound else "misses"
        table_rows.append(
            [
                name,
                round(value),
                spread(values),
                round(inflight),
                f"{value / bound:.1%}",
                verdict,
                f"{arrivals:,.0f} ({arrivals / bound:.0%})",
            ]
        )
    rounds = -(-rows // concurrency)
    ideal = rows / (rounds * latency)
    title = (
        f"Latency-bound case: server latency {latency * 1000:.0f} ms, concurrency {concurrency},"
        f" {rows:,} rows, {reps} rep(s); bound {bound:.0f} rows/s, target >= {LATENCY_TARGET:.0%}\n"
        f"(with {rows:,} rows a perfect client needs {rounds} rounds of {latency:g} s:"
        f" {ideal:.0f} rows/s = {ideal / bound:.0%} of the bound)\n"
        "rows/s: rows over the client's wall time, start-up included; server-side: requests/s"
        " as the server saw them arrive, first to last (start-up and the last round left out)"
    )
    headers = ["client", "median rows/s", "range", "max in flight", "of bound", "verdict"]
    headers.append("server-side rows/s")
    print_table(title, headers, table_rows)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians are shown)")
    parser.add_argument("--concurrency", default="8,64", help="comma-separated levels")
    parser.add_argument("--clients", help="comma-separated subset of the client names")
    parser.add_argument(
        "--latency-case", action="store_true", help="also run the 500 ms / c=256 case"
    )
    parser.add_argument("--latency-rows", type=int, default=3000, help="rows in the latency case")
    parser.add_argument(
        "--latency-reps", type=int, default=1, help="repetitions of the latency case"
    )
    parser.add_argument(
        "--latency-only", action="store_true", help="run only the latency-bound case"
    )
    parser.add_argument(
        "--latency-concurrency", type=int, default=256, help="concurrency of the latency case"
    )
    parser.add_argument(
        "--before", help="another tree's zbatch console script: the zbatch-cli-before client"
    )
    args = start(parser)
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    selected = set(args.clients.split(",")) if args.clients else None
    if args.before:
        BEFORE.append(args.before)
    chosen = [
        (name, fn)
        for name, fn in CLIENTS
        if (not selected or name in selected) and (args.before or name != "zbatch-cli-before")
    ]
    names = [name for name, _ in chosen]
    logging.getLogger("zbatch").setLevel(logging.INFO)  # as the CLI does: run.log gets events

    if not args.latency_only:
        print(
            f"zero-latency fake server (one subprocess for all clients), {args.rows:,} rows per "
            f"measurement, {args.reps} rep(s), clients interleaved\n"
        )
        say("zero-latency runs:")
        with fake_server() as server:
            samples = run_matrix(server, args.rows, levels, args.reps, chosen)
        print_matrix(samples, levels, names)
        print_targets(samples, max(levels))
        print_cpu_ratios(samples, max(levels), names)
    if args.latency_case or args.latency_only:
        latency_case(args.latency_rows, args.latency_reps, chosen, args.latency_concurrency)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
