"""Ten million rows: peak RSS of the zbatch CLI, a kill -9 part-way and its resume, and the
resume of the finished OUTDIR (issue 25: <= 400 MB at 10M rows, a 10M resume <= 15 s).

    python bench/ten_million.py                   # 10,000,000 rows (tens of minutes)
    python bench/ten_million.py --rows 1000000    # the same steps at 1M

One OUTDIR, one input, three runs of the same ``zbatch run`` command (the installed console
script, started through bench/common.py's launcher, so each peak RSS is the zbatch process's
own):

1. **killed**: the run from scratch, SIGKILLed once ``--kill-at`` of the rows have been
   answered (the loopback server's request count);
2. **resumed**: the same command on that OUTDIR. What a user waits for is the time from the
   command's start to its first new request (read from the server's arrival record, against
   the run's start); it then answers the rest, to the end (peak RSS over a 10M-row run: the
   repeated-id set of every input row and the done ids of the killed run, both at once);
3. **finished**: the same command once more over the complete OUTDIR: nothing is left to send,
   so its wall is the resume of N committed rows (and it must send 0 requests).

After run 2 every one of the N ids must be in results/ exactly once, each holding the
answer to its own prompt (the fake server's ``echo:`` rule), read back a batch at a time.
The input is JSONL written by a generator (flat memory), ~95 bytes a row; it and the OUTDIR
are removed at the end (``--keep`` keeps them). Run it niced: ``nice -n 10 python ...``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
from common import (
    ChildRun,
    arg_parser,
    bench_env,
    fake_server,
    load_average,
    make_jsonl,
    print_table,
    prompt_for,
    run_child,
    say,
    start,
    vm_hwm_mb,
    zbatch_cli,
)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--part-rows", type=int, default=50_000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of rows, 0..1")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the input and OUTDIR")
    args = start(parser)
    work = args.workdir / f"ten-million-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        measure(args, work)
    finally:
        if not args.keep:
            for path in sorted(work.rglob("*"), key=lambda p: -len(p.parts)):
                path.rmdir() if path.is_dir() else path.unlink()
            work.rmdir()


def measure(args: Any, work: Path) -> None:
    rows, loads = args.rows, [load_average()]
    started = time.perf_counter()
    source = make_jsonl(work / "input.jsonl", rows)
    say(f"input: {rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB in", elapsed(started))
    outdir = work / "out"
    extra = ["--part-rows", str(args.part_rows)]
    with fake_server(latency=0) as server:
        cmd = zbatch_cli(source, outdir, server.base_url, args.concurrency, *extra)

        def answered() -> int:
            return int(server.stats()["requests"])

        killed = run_child(
            cmd,
            env=env(),
            workdir=work,
            on_tick=killer(answered, args.kill_at * rows, loads),
            tick_seconds=2.0,
        )
        if killed.returncode != -signal.SIGKILL:
            killed.check("the run to be killed")
            raise SystemExit(f"the run ended (exit {killed.returncode}) before it was killed")
        done_before = committed(outdir)
        say(
            f"killed: {done_before:,} rows committed, {killed.peak_rss_mb:.0f} MB,",
            f"{killed.seconds:.0f} s",
        )

        server.reset_stats()
        first = FirstRequest(server.stats)
        resumed = run_child(cmd, env=env(), workdir=work, on_tick=ticker(loads), tick_seconds=15.0)
        resumed.check("the resumed run")
        to_first = first.seconds(resumed)
        say(
            f"resumed: {resumed.seconds:.0f} s, {resumed.peak_rss_mb:.0f} MB;",
            f"first request after {to_first} s",
        )
        check_results(outdir, rows)

        server.reset_stats()
        loads.append(load_average())
        finished = run_child(cmd, env=env(), workdir=work)
        finished.check("the run over the finished OUTDIR")
        sent = int(server.stats()["requests"])
        loads.append(load_average())

    print(
        f"\n{rows:,} rows of JSONL ({source.stat().st_size / 1e6:,.0f} MB), `zbatch run "
        f"--concurrency {args.concurrency} --part-rows {args.part_rows}`, loopback server "
        "(latency 0); load average "
        f"{min(loads):.1f}-{max(loads):.1f}; {done_before:,} rows committed when killed"
    )
    print_table(
        "runs of the same command on one OUTDIR",
        ["run", "wall s", "peak RSS MB", "CPU s", "rows sent", "first new request s"],
        [
            [
                "1. from scratch, kill -9",
                f"{killed.seconds:.1f}",
                killed.peak_rss_mb,
                f"{killed.cpu_seconds:.1f}",
                "-",
                "-",
            ],
            [
                "2. resume of the killed run",
                f"{resumed.seconds:.1f}",
                resumed.peak_rss_mb,
                f"{resumed.cpu_seconds:.1f}",
                f"{rows - done_before:,}",
                to_first,
            ],
            [
                "3. resume of the finished OUTDIR",
                f"{finished.seconds:.1f}",
                finished.peak_rss_mb,
                f"{finished.cpu_seconds:.1f}",
                f"{sent:,}",
                "-",
            ],
        ],
    )
    if sent:
        raise SystemExit(f"the run over the finished OUTDIR sent {sent} requests")


def env() -> dict[str, str]:
    return bench_env(ZAI_API_KEY="bench-key")


def elapsed(since: float) -> str:
    return f"{time.perf_counter() - since:.0f} s"


def committed(outdir: Path) -> int:
    """Result rows in committed parts (their Parquet footers)."""
    results = outdir / "results"
    if not results.exists():
        return 0
    try:
        return sum(f.count_rows() for f in ds.dataset(results, format="parquet").get_fragments())
    except (OSError, ValueError):
        return 0  # a part being renamed into place


def killer(answered: Any, at: float, loads: list[float]) -> Any:
    """An on_tick that SIGKILLs the child once ``answered()`` reaches ``at``."""

    def tick(seconds: float, pid: int) -> None:
        count = answered()
        if count >= at:
            loads.append(load_average())
            say(f"kill -9 at {seconds:.0f} s, {count:,} answered, {vm_hwm_mb(pid)} MB so far")
            os.kill(pid, signal.SIGKILL)
        elif int(seconds) % 60 < 2:
            loads.append(load_average())
            say(
                f"{seconds:.0f} s: {count:,} answered, peak {vm_hwm_mb(pid)} MB,",
                f"load {loads[-1]:.1f}",
            )

    return tick


def ticker(loads: list[float]) -> Any:
    def tick(seconds: float, pid: int) -> None:
        loads.append(load_average())
        say(f"{seconds:.0f} s: peak {vm_hwm_mb(pid)} MB, load {loads[-1]:.1f}")

    return tick


class FirstRequest:
    """When the run's first request reached the server, against the run's start.

    The server's arrival record is seconds since its stats were reset, which happens just
    before the run starts; polled from a thread until the first arrival."""

    def __init__(self, stats: Any) -> None:
        self.reset_at = time.perf_counter()
        self.arrival: float | None = None
        if stats is not None:
            threading.Thread(target=self._poll, args=(stats,), daemon=True).start()

    def _poll(self, stats: Any) -> None:
        for _ in range(60_000):  # bounded: 10 min at 10 ms
            starts = stats()["request_starts"]
            if starts:
                self.arrival = float(starts[0])
                return
            time.sleep(0.01)

    def seconds(self, run: ChildRun) -> str:
        if self.arrival is None:
            return "n/a"
        # the run started a hair after reset_at: this is an upper bound by that hair
        return f"{self.arrival:.1f}"


def check_results(outdir: Path, rows: int) -> None:
    """Each of the ``rows`` ids in results/ exactly once, holding the answer to its prompt."""
    seen = bytearray(rows)
    dataset = ds.dataset(outdir / "results", format="parquet")
    for batch in dataset.to_batches(columns=["id", "content"], batch_size=65_536):
        for row_id, content in zip(*(batch.column(i).to_pylist() for i in range(2)), strict=True):
            index = int(row_id[1:])
            if seen[index]:
                raise SystemExit(f"{row_id} is in results/ twice")
            seen[index] = 1
            expected = "echo:" + hashlib.sha1(prompt_for(index).encode()).hexdigest()[:16]
            if content != expected:
                raise SystemExit(f"{row_id} holds {content!r}, not the answer to its prompt")
    if (missing := seen.count(0)) != 0:
        raise SystemExit(f"{missing:,} ids are not in results/")
    say(f"checked: {rows:,} ids once each, each holding its own answer")


if __name__ == "__main__":
    main()
