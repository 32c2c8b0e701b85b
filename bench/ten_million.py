"""Ten million rows: peak RSS of the zbatch CLI, a kill -9 part-way and its resume, and the
resume of the finished OUTDIR (issue 25: <= 400 MB at 10M rows, a 10M resume <= 15 s).

    python bench/ten_million.py                   # 10,000,000 rows (tens of minutes)
    python bench/ten_million.py --rows 1000000    # the same steps at 1M
    python bench/ten_million.py --no-kill         # run 1 to its end (no kill), then step 3
    python bench/ten_million.py --compare OUTDIR OLD_ZBATCH   # step 3, old and new, in turns

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
import itertools
import os
import signal
import sys
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
    parser.add_argument("--kill-after", type=float, help="or after this many seconds")
    parser.add_argument(
        "--no-kill", action="store_true", help="run 1 to its end (no kill, no step 2)"
    )
    parser.add_argument("--resume-for", type=float, help="kill -9 the resume after this long")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the input and OUTDIR")
    parser.add_argument("--state", type=Path, help="only: read OUTDIR's done ids both ways")
    parser.add_argument(
        "--resume", type=Path, help="steps 2 and 3 only, on OUTDIR (its input beside it)"
    )
    parser.add_argument(
        "--prefix-resume",
        type=Path,
        nargs=2,
        metavar=("OUTDIR", "INPUT"),
        help="only: the same command over OUTDIR with INPUT cut to its longest answered start",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("OUTDIR", "ZBATCH"),
        help="only: step 3 on a finished OUTDIR (its input beside it), by ZBATCH (another "
        "tree's console script) and by this one, in turns, --rounds times",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = start(parser)
    if args.compare is not None:
        compare(*args.compare, args)
        return
    if args.state is not None:
        read_back(args.state)
        return
    if args.prefix_resume is not None:
        outdir, source = args.prefix_resume
        prefix_resume(outdir, source, args)
        return
    if args.resume is not None:
        measure(args, args.resume.parent)
        return
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
    source, outdir = work / "input.jsonl", args.resume or work / "out"
    if args.resume is None:
        make_jsonl(source, rows)
        say(f"input: {rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB in", elapsed(started))
    extra = ["--part-rows", str(args.part_rows)]
    timeline: list[tuple[str, float, int, float | None]] = []
    with fake_server(latency=0) as server:
        cmd = zbatch_cli(source, outdir, server.base_url, args.concurrency, *extra)

        def answered() -> int:
            return int(server.stats()["requests"])

        killed = None
        if args.resume is None:
            at, after = (
                (float("inf"), None) if args.no_kill else (args.kill_at * rows, args.kill_after)
            )
            stop = Stop(answered, at, after, "1", timeline, loads)
            killed = run_child(cmd, env=env(), workdir=work, on_tick=stop, tick_seconds=5.0)
            if args.no_kill:
                killed.check("the run from scratch")
            elif killed.returncode != -signal.SIGKILL:
                killed.check("the run to be killed")
                raise SystemExit(f"the run ended (exit {killed.returncode}) before it was killed")
        done_before = committed(outdir)
        say(f"run 1: {done_before:,} rows committed")

        resumed, sent_resumed, first = None, 0, None
        if not args.no_kill:
            server.reset_stats()
            first = FirstRequest(server.stats)
            stop = Stop(answered, float("inf"), args.resume_for, "2", timeline, loads)
            resumed = run_child(cmd, env=env(), workdir=work, on_tick=stop, tick_seconds=5.0)
            sent_resumed = answered()
            say(f"resumed: {resumed.seconds:.0f} s, {resumed.peak_rss_mb:.0f} MB, first {first}")
        complete = resumed is None or resumed.returncode != -signal.SIGKILL
        if complete:
            if resumed is not None:
                resumed.check("the resumed run")
            check_results(outdir, rows)

        finished = None
        if complete:
            server.reset_stats()
            loads.append(load_average())
            finished = run_child(cmd, env=env(), workdir=work)
            finished.check("the run over the finished OUTDIR")
            if (sent := answered()) != 0:
                raise SystemExit(f"the run over the finished OUTDIR sent {sent} requests")
            loads.append(load_average())

    print(
        f"\n{rows:,} rows of JSONL ({source.stat().st_size / 1e6:,.0f} MB), `zbatch run "
        f"--concurrency {args.concurrency} --part-rows {args.part_rows}`, loopback server "
        f"(latency 0); load average {min(loads):.1f}-{max(loads):.1f}"
    )
    table_rows = []
    if killed is not None:
        name = "1. from scratch, " + ("to its end" if args.no_kill else "kill -9")
        table_rows.append(run_row(name, killed, f"{done_before:,} committed", "-"))
    if resumed is not None:
        table_rows.append(
            run_row(
                f"2. resume of the killed run ({done_before:,} rows committed)"
                + ("" if complete else f", kill -9 at {args.resume_for} s"),
                resumed,
                f"{sent_resumed:,} sent",
                str(first),
            )
        )
    if finished is not None:
        table_rows.append(run_row("3. resume of the finished OUTDIR", finished, "0 sent", "-"))
    print_table(
        "runs of the same command on one OUTDIR",
        ["run", "wall s", "peak RSS MB", "CPU s", "rows", "first new request s"],
        table_rows,
    )
    print_table(
        "peak RSS as the runs went (VmHWM)",
        ["run", "s", "requests", "peak RSS MB so far"],
        [[run, f"{t:.0f}", f"{n:,}", mb] for run, t, n, mb in timeline],
    )


def run_row(name: str, run: ChildRun, rows: str, first: str) -> list[Any]:
    return [name, f"{run.seconds:.1f}", run.peak_rss_mb, f"{run.cpu_seconds:.1f}", rows, first]


class Stop:
    """An on_tick that SIGKILLs the child once ``answered()`` reaches ``at`` or ``after``
    seconds have passed, noting the child's peak RSS every minute or so."""

    def __init__(
        self,
        answered: Any,
        at: float,
        after: float | None,
        run: str,
        timeline: list[tuple[str, float, int, float | None]],
        loads: list[float],
    ) -> None:
        self.answered, self.at, self.after, self.run = answered, at, after, run
        self.timeline, self.loads, self.noted = timeline, loads, -60.0

    def __call__(self, seconds: float, pid: int) -> None:
        count = self.answered()
        due = count >= self.at or (self.after is not None and seconds >= self.after)
        if due or seconds - self.noted >= 60:
            self.noted = seconds
            self.loads.append(load_average())
            self.timeline.append((self.run, seconds, count, vm_hwm_mb(pid)))
            say(
                f"run {self.run}, {seconds:.0f} s: {count:,} requests, {vm_hwm_mb(pid)} MB peak,",
                f"load {self.loads[-1]:.1f}",
            )
        if due:
            os.kill(pid, signal.SIGKILL)


# One way of reading an OUTDIR's done ids, run in a fresh interpreter (its own peak RSS):
# "before" is the set of Python strings load_state built up to 70fad21, "after" load_state.
_READ_BACK = """
import sys, time
from zbatch.store.outdir import OutputDir
from zbatch.store.layout import RESULTS
outdir = OutputDir(sys.argv[2])
started = time.perf_counter()
if sys.argv[1] == "before":
    ids = set()
    for batch in outdir.parts(RESULTS).batches(["id"]):
        ids.update(batch.column(0).to_pylist())
    count = len(ids)
else:
    count = len(outdir.load_state().succeeded)
print(count, time.perf_counter() - started)
"""


def read_back(outdir: Path) -> None:
    """The done ids of ``outdir`` read back as a set of str (before) and by load_state."""
    rows = []
    for way in ("before", "after"):
        child = run_child([sys.executable, "-c", _READ_BACK, way, str(outdir)])
        child.check(way)
        count, seconds = child.stdout.split()
        rows.append([way, f"{int(count):,}", f"{float(seconds):.1f}", child.peak_rss_mb])
    print_table(
        f"the done ids of {outdir} read back (load {load_average():.1f})",
        ["way", "ids", "seconds", "peak RSS MB"],
        rows,
    )


def prefix_resume(outdir: Path, source: Path, args: Any) -> None:
    """A resume with nothing to send over a (killed) run's OUTDIR: the input cut to the
    rows from the first up to the first one without a result, then the same command."""
    answered = bytearray(args.rows)
    for batch in ds.dataset(outdir / "results", format="parquet").to_batches(columns=["id"]):
        for row_id in batch.column(0).to_pylist():
            answered[int(row_id[1:])] = 1
    rows = answered.find(0) if 0 in answered else args.rows
    prefix = outdir.parent / f"prefix-{rows}.jsonl"
    with source.open("rb") as whole, prefix.open("wb") as cut:
        cut.writelines(itertools.islice(whole, rows))
    extra = ("--part-rows", str(args.part_rows))
    loads = [load_average()]
    with fake_server(latency=0) as server:
        cmd = zbatch_cli(prefix, outdir, server.base_url, args.concurrency, *extra)
        child = run_child(cmd, env=env(), workdir=outdir.parent)
        child.check("the resume")
        sent = int(server.stats()["requests"])
    loads.append(load_average())
    prefix.unlink()
    print_table(
        f"the same command over {outdir} ({answered.count(1):,} rows answered), its input cut "
        f"to the first {rows:,} rows (load {min(loads):.1f}-{max(loads):.1f})",
        ["input rows", "wall s", "CPU s", "peak RSS MB", "requests"],
        [[rows, f"{child.seconds:.1f}", f"{child.cpu_seconds:.1f}", child.peak_rss_mb, sent]],
    )


def compare(outdir: Path, old: Path, args: Any) -> None:
    """The same command on a finished OUTDIR, by the ``old`` console script and by this
    tree's, in turns. This tree's runs twice a round: the first meets the page the old one
    wrote (and writes it anew), the second meets its own (and, if nothing changed, keeps
    it). One server for all: job.json's base URL stays the same."""
    source = outdir.parent / "input.jsonl"
    extra = ("--part-rows", str(args.part_rows))
    table_rows, loads = [], [load_average()]
    with fake_server(latency=0) as server:
        new = zbatch_cli(source, outdir, server.base_url, args.concurrency, *extra)
        ways = [("old", [str(old), *new[1:]]), ("new, after old", new), ("new, after new", new)]
        for round_ in range(1, args.rounds + 1):
            for name, cmd in ways:
                server.reset_stats()
                load, log_size = load_average(), (outdir / "run.log").stat().st_size
                child = run_child(cmd, env=env(), workdir=outdir.parent)
                child.check(name)
                sent = int(server.stats()["requests"])
                kept = "report.html kept" in lines_since(outdir / "run.log", log_size)
                say(f"round {round_}, {name}: {child.seconds:.1f} s, {child.peak_rss_mb:.0f} MB")
                table_rows.append(
                    [round_, name, f"{child.seconds:.1f}", child.peak_rss_mb,
                     f"{child.cpu_seconds:.1f}", sent, "kept" if kept else "written",
                     f"{load:.1f}"]
                )  # fmt: skip
                loads.append(load)
    print_table(
        f"the same command on the finished OUTDIR {outdir} (`zbatch run --concurrency "
        f"{args.concurrency} --part-rows {args.part_rows}`), old = {old}; load average "
        f"{min(loads):.1f}-{max(loads):.1f}",
        ["round", "zbatch", "wall s", "peak RSS MB", "CPU s", "requests", "report.html",
         "load"],
        table_rows,
    )  # fmt: skip


def lines_since(path: Path, offset: int) -> str:
    """What a log file got after its first ``offset`` bytes."""
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


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

    def __str__(self) -> str:
        # The stats were reset a hair before the run started: an upper bound by that hair.
        return "n/a" if self.arrival is None else f"{self.arrival:.1f}"


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
