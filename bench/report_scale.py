"""`zbatch report` and `zbatch review` on a 1M-row OUTDIR: CPU, wall time and peak memory.

    python bench/report_scale.py                    # 1M rows, 3 runs of each command
    python bench/report_scale.py --rows 200000 --reps 1

The OUTDIR is bench/startup.py's (a real run's job.json and part schema, then parts of
50,000 rows written with pyarrow: 98 % answered with a label, 1 % failed, 1 % pending). The
input gets a `gold` column that agrees with the stored label on ~80 % of the rows, and a copy
of the OUTDIR with every 16th label changed serves as the other run for --against.
Each command is the installed console script as a subprocess, measured as bench/startup.py
measures (``common.run_child``: CPU from ``os.wait4``, peak RSS); after one unmeasured
warm-up, the median of ``--reps`` runs.
``zbatch status`` on the same OUTDIR is the baseline: what reading the OUTDIR costs anyway.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from common import ZBATCH, arg_parser, load_average, say, table, tree_state, work_dir
from startup import CHOICES, build_outdir, measure


def add_gold(source: Path) -> None:
    """A `gold` column: the label a part holds for the row (the parts rotate over the seed
    run's labels) on four rows out of five, another label on the fifth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    gold = [CHOICES[(i + (i % 5 == 4)) % len(CHOICES)] for i in range(table.num_rows)]
    pq.write_table(table.append_column("gold", pa.array(gold)), source, row_group_size=50_000)


def changed_copy(outdir: Path, other: Path) -> None:
    """A copy of ``outdir`` whose label is "neutral" on every 16th row of each part."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shutil.copytree(outdir, other)
    for part in sorted((other / "results").glob("part-*.parquet")):
        table = pq.read_table(part)
        labels = table.column("label")
        changed = pc.if_else(
            pc.equal(pc.bit_wise_and(pa.array(range(table.num_rows)), 0xF), 0), "neutral", labels
        )
        at = table.schema.get_field_index("label")
        pq.write_table(table.set_column(at, "label", changed), part)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--reps", type=int, default=3, help="measured runs of each command")
    parser.add_argument("--rows", type=int, default=1_000_000, help="input rows of the OUTDIR")
    args = parser.parse_args()

    with work_dir("zbatch-report-") as work:
        say(f"building a {args.rows:,}-row OUTDIR in {work} ...")
        outdir = build_outdir(work, args.rows)
        add_gold(work / "input.parquet")
        other = work / "other"
        changed_copy(outdir, other)
        page = work / "page.html"
        out, review = str(outdir), str(work / "review.csv")
        gold = ["--gold", "gold"]
        against = ["--against", str(other)]
        commands = [
            ("zbatch status", [ZBATCH, "status", out]),
            ("zbatch report", [ZBATCH, "report", out]),
            ("zbatch report --gold", [ZBATCH, "report", out, *gold]),
            ("zbatch report --gold --against", [ZBATCH, "report", out, *gold, *against]),
            ("zbatch report --gold -o page.html", [ZBATCH, "report", out, *gold, "-o", str(page)]),
            (
                "zbatch review --gold --against -n 100",
                [ZBATCH, "review", out, *gold, *against, "-o", review],
            ),
        ]
        rows = []
        for label, cmd in commands:
            say(f"{label} x {args.reps} ...")
            got = measure(cmd, args.reps, timeout=1200)
            cpu, wall, rss = got["cpu"], got["wall"], got["rss"]
            rows.append([label, f"{cpu:.2f}", got["range"], f"{wall:.2f}", f"{rss:.0f}"])
        size = page.stat().st_size / 1e6
    print(
        f"{os.cpu_count()} cores; {tree_state()}; {args.rows:,} input rows; "
        f"load average {load_average():.2f}; median of {args.reps} runs; page {size:.1f} MB"
    )
    print(table(["command", "CPU s", "CPU range", "wall s", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
