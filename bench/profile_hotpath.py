"""Profile zbatch's hot path with pyinstrument: concurrency 64 on the zero-latency fake server.

    python bench/profile_hotpath.py                       # zbatch as shipped (its http11 client)
    python bench/profile_hotpath.py --transport httpcore  # with httpx's own transport injected
    python bench/profile_hotpath.py --rows 5000 --top 30 --bare  # also the bare httpx loop

Samples the event-loop thread (pyinstrument, async_mode "disabled": the raw stacks, so time
the loop spends waiting in epoll shows as ``select``) and prints: self time by function
(flat, top N), and inclusive time of the zbatch / httpx / httpcore / anyio / aiohttp frames
that matter. Needs ``pip install pyinstrument`` (zbatch's ``bench`` extra).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import anyio
import httpx
from common import arg_parser, fake_server, machine_line, make_jsonl, say, table, work_dir
from throughput import httpx_loop, limits, run_zbatch

from zbatch.transport.aio import AiohttpTransport

try:
    from pyinstrument import Profiler
except ImportError:  # pragma: no cover - optional benchmark dependency
    Profiler = None


def _walk(frame: Any, stack: tuple[str, ...], out: dict[str, Any]) -> None:
    """Self and inclusive time per function (inclusive counted once per stack)."""
    name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
    out["self"][name] += frame.total_self_time
    if name not in stack:
        out["total"][name] += frame.time
    for child in frame.children:
        _walk(child, (*stack, name), out)


def profile(label: str, run: Any, top: int) -> None:
    assert Profiler is not None
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    started = time.perf_counter()
    profiler.start()
    rows = run()
    session = profiler.stop()
    seconds = time.perf_counter() - started
    root = session.root_frame()
    out: dict[str, Any] = {"self": defaultdict(float), "total": defaultdict(float)}
    if root is not None:
        _walk(root, (), out)
    total = root.time if root is not None else seconds
    print(f"\n### {label}: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s")
    print(f"(profiled wall time {total:.2f} s; sampling slows the run somewhat)\n")
    print(f"Self time, top {top}:\n")
    ranked = sorted(out["self"].items(), key=lambda kv: kv[1], reverse=True)[:top]
    print(table(["function", "self s", "share"], _rows(ranked, total)))
    keys = ("zbatch/", "httpx/", "httpcore/", "anyio/", "aiohttp/", "pyarrow/")
    inclusive = [
        (name, value)
        for name, value in out["total"].items()
        if any(k in name for k in keys) and value / total >= 0.03
    ]
    inclusive.sort(key=lambda kv: kv[1], reverse=True)
    print(f"\nInclusive time of library / zbatch frames (>= 3%), top {top}:\n")
    print(table(["function", "incl s", "share"], _rows(inclusive[:top], total)))
    own = [
        (name, value)
        for name, value in out["total"].items()
        if "zbatch/" in name and "bench" not in name and value / total >= 0.005
    ]
    own.sort(key=lambda kv: kv[1], reverse=True)
    print("\nzbatch's own frames, inclusive (>= 0.5%):\n")
    print(table(["function", "incl s", "share"], _rows(own, total)))


def _rows(items: list[tuple[str, float]], total: float) -> list[list[Any]]:
    return [[name, f"{value:.2f}", f"{value / total:.1%}"] for name, value in items]


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--transport",
        choices=["shipped", "httpcore", "both"],
        default="shipped",
        help="shipped: zbatch's own (aiohttp); httpcore: httpx.AsyncHTTPTransport injected",
    )
    parser.add_argument("--bare", action="store_true", help="also profile the bare httpx loop")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if Profiler is None:
        print("note: pyinstrument is not importable (pip install pyinstrument); nothing to do")
        return
    logging.getLogger("zbatch").setLevel(logging.INFO)  # as the CLI does: run.log gets events
    transports = ["shipped", "httpcore"] if args.transport == "both" else [args.transport]
    print(f"machine: {machine_line()}")
    with work_dir("zbatch-prof-") as work, fake_server() as server:
        make_jsonl(work / "input.jsonl", args.rows)
        for name in transports:
            say(f"profiling zbatch, {name} transport ...")

            def run(name: str = name) -> int:
                transport = None
                if name == "httpcore":
                    transport = httpx.AsyncHTTPTransport(limits=limits(args.concurrency))
                outdir = work / f"out-{name}"
                ok, _ = run_zbatch(
                    server.base_url, work / "input.jsonl", outdir, args.concurrency, transport
                )
                return ok

            server.reset_stats()
            profile(f"zbatch, {name} transport, c={args.concurrency}", run, args.top)
        if args.bare:
            say("profiling the bare loop over zbatch's transport ...")
            server.reset_stats()
            transport = AiohttpTransport(max_connections=args.concurrency)
            profile(
                f"bare anyio+httpx loop, zbatch's aiohttp transport, c={args.concurrency}",
                lambda: anyio.run(httpx_loop, server.url, args.rows, args.concurrency, transport),
                args.top,
            )


if __name__ == "__main__":
    main()
