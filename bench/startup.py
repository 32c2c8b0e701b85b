"""Start-up: CPU time of ``zbatch --help``, ``zbatch --version`` and ``zbatch status`` on 1M rows.

    python bench/startup.py                 # 9 runs of each command, a 1M-row OUTDIR
    python bench/startup.py --reps 15 --rows 200000

Cron runs ``zbatch status`` often and people type ``--help``, so what a command costs before
it does anything is measured here (issue 13 item 5; targets: ``--help`` and ``--version``
≤ 0.15 s of CPU, ``status`` of a 1M-row OUTDIR ≤ 1 s).

The OUTDIR is made once in a temp dir. A real ``zbatch run`` against the fake server on a
few seed rows (some answered with a label, some with a non-retryable 400) writes job.json and
one results part and one errors part in zbatch's own layout and schema; the input file is then
replaced by one of ``--rows`` rows, and the parts by ones written here with pyarrow that hold
those ids: 98 % answered (in parts of 50,000 rows, as a run writes them), 1 % failed, 1 %
pending. Each command is the installed console script as a subprocess; its CPU time (user +
system) comes from ``os.wait4`` (``common.run_child``). After one unmeasured warm-up run, the
median of ``--reps`` runs is reported; ``python -c pass`` gives the interpreter's own floor.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from common import (
    ZBATCH,
    arg_parser,
    bench_env,
    fake_server,
    load_average,
    make_parquet,
    median,
    row_id,
    run_child,
    say,
    table,
    tree_state,
    work_dir,
    zbatch_run,
)

TARGETS = {"--help": 0.15, "--version": 0.15, "status": 1.0}
PART_ROWS = 50_000
CHOICES = ("positive", "negative", "neutral")


def build_outdir(root: Path, rows: int) -> Path:
    """An OUTDIR in zbatch's layout holding ``rows`` input ids (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = root / "input.parquet"
    seed = [f"LABEL={label}" for label in CHOICES] + ["FAIL=400"]
    pq.write_table(pa.table({"id": [f"seed{i}" for i in range(len(seed))], "prompt": seed}), source)
    outdir = root / "out"
    with fake_server() as server:
        flags = ["--choices", ",".join(CHOICES), "--max-retries", "0", "--quiet"]
        run = run_child(
            zbatch_run(source, outdir, server.base_url, *flags),
            env=bench_env(ZAI_API_KEY="zk-bench"),
            timeout=120,
        )
    if run.returncode not in (0, 1):  # 1: the seeded 400 row failed, as meant
        raise RuntimeError(f"seed run failed (exit {run.returncode}): {run.stderr}")
    make_parquet(source, rows)
    failed = rows // 100
    answered = rows - 2 * failed
    _replace_parts(outdir / "results", range(answered))
    _replace_parts(outdir / "errors", range(answered, answered + failed))
    report = json.loads(
        run_child([ZBATCH, "status", str(outdir), "--json"], env=bench_env()).stdout
    )
    if (report["done"], report["failed"], report["pending"]) != (answered, failed, failed):
        raise RuntimeError(f"the OUTDIR is not what was meant: {report}")
    return outdir


def _replace_parts(folder: Path, ids: range) -> None:
    """Swap the seed run's one part for parts holding ``ids``, each row a copy of the seed's
    rows but for its id (labels rotate over the seed's labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (seed_part,) = sorted(folder.glob("part-*.parquet"))
    seed = pq.read_table(seed_part)
    stem = seed_part.stem.rsplit("-", 1)[0]  # zbatch's name without its sequence number
    seed_part.unlink()
    for seq, start in enumerate(range(ids.start, ids.stop, PART_ROWS), start=1):
        stop = min(ids.stop, start + PART_ROWS)
        picks = pa.array([i % seed.num_rows for i in range(start, stop)], pa.int64())
        part = seed.take(picks)
        ids_here = pa.array([row_id(i) for i in range(start, stop)])
        part = part.set_column(seed.schema.get_field_index("id"), "id", ids_here)
        pq.write_table(part, folder / f"{stem}-{seq:05d}.parquet")


def measure(cmd: list[str], reps: int, timeout: float = 120) -> dict[str, Any]:
    """Median and range of CPU and wall seconds over ``reps`` runs after one warm-up."""
    runs = []
    for attempt in range(reps + 1):
        run = run_child(cmd, env=bench_env(), timeout=timeout)
        run.check(" ".join(cmd))
        if attempt:
            runs.append(run)
    cpu = [r.cpu_seconds for r in runs]
    return {
        "cpu": median(cpu),
        "range": f"{min(cpu):.3f}-{max(cpu):.3f}",
        "wall": median([r.seconds for r in runs]),
        "rss": median([r.peak_rss_mb for r in runs]),
    }


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--reps", type=int, default=9, help="measured runs of each command")
    parser.add_argument("--rows", type=int, default=1_000_000, help="input rows of the OUTDIR")
    args = parser.parse_args()

    with work_dir("zbatch-startup-") as work:
        say(f"building a {args.rows:,}-row OUTDIR in {work} ...")
        outdir = build_outdir(work, args.rows)
        commands = [
            ("python -c pass", None, [sys.executable, "-c", "pass"]),
            ("zbatch --help", "--help", [ZBATCH, "--help"]),
            ("zbatch --version", "--version", [ZBATCH, "--version"]),
            (f"zbatch status ({args.rows:,} rows)", "status", [ZBATCH, "status", str(outdir)]),
        ]
        rows = []
        for label, target_key, cmd in commands:
            say(f"{label} x {args.reps} ...")
            got = measure(cmd, args.reps)
            target = TARGETS.get(target_key or "")
            verdict = "-" if target is None else ("met" if got["cpu"] <= target else "missed")
            rows.append(
                [
                    label,
                    f"{got['cpu']:.3f}",
                    got["range"],
                    f"{got['wall']:.3f}",
                    f"{got['rss']:.0f}",
                    "-" if target is None else f"≤ {target:.2f}",
                    verdict,
                ]
            )
    print(
        f"{os.cpu_count()} cores; {tree_state()}; measured {ZBATCH}; "
        f"load average {load_average():.2f}; median of {args.reps} runs"
    )
    print(
        table(
            ["command", "CPU s", "CPU range", "wall s", "peak RSS MB", "target CPU s", "verdict"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
