"""The slow tail: wall time of a run where 1% of requests hang, with and without hedging.

    python bench/hedging.py                      # 2,000 rows, c=16, 1% of requests hang 30 s
    python bench/hedging.py --rows 2000 --hang 60 --reps 2

The fake server answers in --latency seconds, except that each request (hedges included)
hangs for --hang seconds with probability --rate. Without hedging, the run's end waits for
the last hung request; with it, an attempt running past max(5 * p50, p99) once the input is
used up is sent again on a second connection, and the first answer wins. Each run checks that
every row is recorded exactly once. Runs alternate (off, on, off, on, ...) so drift in the
machine's load hits both alike.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from common import arg_parser, checked_run, fake_server, make_jsonl, median, start, table

import zbatch


def one_run(
    base_url: str, rows: int, concurrency: int, work: Path, *, hedge: bool
) -> dict[str, float]:
    outdir = Path(tempfile.mkdtemp(prefix="hedge-" if hedge else "plain-", dir=work))
    job = zbatch.Job(
        input_path=str(work / "input.jsonl"),
        output_dir=str(outdir),
        base_url=base_url,
        concurrency=concurrency,
        hedge=hedge,
        log_every=3600,
    )
    seconds, _ = checked_run(job, rows)
    summary = json.loads((outdir / "summary.json").read_text())
    return {"seconds": seconds, "hedged": summary["hedged_requests"]}


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02, help="normal answer time (s)")
    parser.add_argument("--rate", type=float, default=0.01, help="share of requests that hang")
    parser.add_argument("--hang", type=float, default=30.0, help="how long they hang (s)")
    parser.add_argument("--reps", type=int, default=2)
    args = start(parser)
    print(
        f"{args.rows:,} rows, c={args.concurrency}, answers in {args.latency * 1000:.0f} ms, "
        f"{args.rate:.0%} of requests hang {args.hang:g} s; {args.reps} rep(s) each\n"
    )
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_server(
            latency=args.latency,
            rates=json.dumps({"slow": args.rate}),
            slow_seconds=args.hang,
            seed=7,
        ) as server,
    ):
        work = Path(tmp)
        make_jsonl(work / "input.jsonl", args.rows)
        for rep in range(args.reps):
            for hedge in (False, True):
                server.reset_stats()
                run = one_run(server.base_url, args.rows, args.concurrency, work, hedge=hedge)
                runs[hedge].append(run)
                print(
                    f"  rep {rep + 1} hedge={'on ' if hedge else 'off'} {run['seconds']:7.1f} s, "
                    f"{run['hedged']:.0f} hedged requests",
                    flush=True,
                )
    rows = [
        [
            "on" if hedge else "off",
            f"{median([r['seconds'] for r in runs[hedge]]):.1f}",
            ", ".join(f"{r['seconds']:.1f}" for r in runs[hedge]),
            f"{median([r['hedged'] for r in runs[hedge]]):.0f}",
        ]
        for hedge in (False, True)
    ]
    print()
    print(table(["hedging", "wall s (median)", "each run", "hedged requests"], rows))


if __name__ == "__main__":
    main()
