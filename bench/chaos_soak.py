"""The chaos test's longer soak: more seeds, more rounds, the same code (tests/chaos.py).

    python bench/chaos_soak.py                       # seeds 1..5, 15 rounds each
    python bench/chaos_soak.py --seeds 10 --rounds 20 --rows 600

Each seed starts writers of random kinds (a whole online run, shard K/N of a random N, a
batch-mode run) with one --max-cost for the OUTDIR on it, kills them -9 and restarts them at
random, then checks the guarantees (every id once with its own answer after a final run with
a raised budget; results/ never showing an id twice while they run; every answer bought twice
one a kill lost; spend within the budget plus the worst case of what the kills lost; status's
cost_usd that spend less at most what the kills lost). Prints one line per seed and a table
for docs/performance.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import REPO, arg_parser, start, table

sys.path.insert(0, str(REPO / "tests"))
from chaos import run_chaos


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rows", type=int, default=400)
    args = start(parser)
    rows = []
    for seed in range(1, args.seeds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            report = run_chaos(Path(tmp), seed=seed, rounds=args.rounds, rows=args.rows)
        print(report.line(), flush=True)
        report.check()
        rows.append(
            [
                seed,
                report.writers,
                report.kills,
                report.refused,
                report.looks,
                sum(report.bought.values()),
                sum(report.bought_twice.values()),
                report.lost_count,
                report.stopped,
                report.pending,
                f"{report.budget:.4f}",
                f"{report.spent:.4f}",
                f"{report.lost_worst:.4f}",
                f"{report.status_usd:.4f}",
                f"{report.seconds:.0f}",
            ]
        )
    headers = ["seed", "writers", "kill -9", "refused (75)", "looks at results/"]
    headers += ["answers bought", "bought twice", "lost by kills", "stopped (5)", "pending"]
    headers += ["budget $", "spent $", "lost worst case $", "status cost_usd $", "seconds"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
