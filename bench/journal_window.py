"""The journal window on slow storage: answers not yet durable, with and without back-pressure.

    python bench/journal_window.py                       # 3,000 rows, c=64, fsync 0.3 s
    python bench/journal_window.py --fsync 0.3 --rows 3000 --concurrency 64

Each group commit of the answer journal is made to take --fsync seconds (a sleep before the
real write and fsync, in the journal's writer thread, as a slow disk or network filesystem
would). The figure that matters is the most answers ever received and not yet durable at
once (``Journal.unsynced``): a kill -9 at that moment buys them again. With back-pressure
(MAX_UNSYNCED) workers stop sending while that many wait, so the window stays bounded
whatever the fsync takes; without it (the bound lifted) it grows with fsync x answer rate.
Runs alternate (bounded, unbounded, ...) so drift in the machine's load hits both alike.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from common import arg_parser, checked_run, fake_server, make_jsonl, median, start, table

import zbatch
from zbatch.store import journal as journal_module

PEAK = {"unsynced": 0}


def slow_journal(fsync: float) -> None:
    """Every journal write takes ``fsync`` seconds more; the peak of unsynced answers noted."""
    append, record = journal_module.Journal._append, journal_module.Journal.record

    def slow_append(self: Any, segment: int, data: bytes) -> None:
        time.sleep(fsync)
        append(self, segment, data)

    def noting_record(self: Any, table_name: str, row: Any) -> None:
        record(self, table_name, row)
        PEAK["unsynced"] = max(PEAK["unsynced"], self.unsynced)

    journal_module.Journal._append = slow_append  # type: ignore[method-assign]
    journal_module.Journal.record = noting_record  # type: ignore[method-assign,assignment]


def one_run(base_url: str, rows: int, concurrency: int, work: Path) -> dict[str, float]:
    outdir = Path(tempfile.mkdtemp(prefix="window-", dir=work))
    job = zbatch.Job(
        input_path=str(work / "input.jsonl"),
        output_dir=str(outdir),
        base_url=base_url,
        concurrency=concurrency,
        log_every=3600,
    )
    PEAK["unsynced"] = 0
    seconds, _ = checked_run(job, rows)
    return {"seconds": seconds, "peak": PEAK["unsynced"]}


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.01, help="answer time (s)")
    parser.add_argument("--fsync", type=float, default=0.3, help="seconds per group commit")
    parser.add_argument("--reps", type=int, default=2)
    args = start(parser)
    bound = journal_module.MAX_UNSYNCED
    print(
        f"{args.rows:,} rows, c={args.concurrency}, answers in {args.latency * 1000:.0f} ms, "
        f"each journal write +{args.fsync:g} s; MAX_UNSYNCED={bound}; {args.reps} rep(s)\n"
    )
    slow_journal(args.fsync)
    figures: dict[str, list[dict[str, float]]] = {"bounded": [], "unbounded": []}
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency=args.latency) as server:
        work = Path(tmp)
        make_jsonl(work / "input.jsonl", args.rows)
        for _ in range(args.reps):
            for name, limit in (("bounded", bound), ("unbounded", 10**9)):
                journal_module.MAX_UNSYNCED = limit
                figures[name].append(one_run(server.base_url, args.rows, args.concurrency, work))
    rows = []
    for name, runs in figures.items():
        seconds = median([r["seconds"] for r in runs])
        peak = max(r["peak"] for r in runs)
        rows.append([name, f"{peak:,.0f}", f"{seconds:.2f}", f"{args.rows / seconds:,.0f}"])
    print(table(["journal", "most answers not yet durable", "seconds", "rows/s"], rows))


if __name__ == "__main__":
    main()
