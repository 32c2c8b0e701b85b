"""What metrics cost a run: CPU per row with --metrics-file and --pushgateway on, against off.

    python bench/metrics_overhead.py                # 20,000 rows, concurrency 32, 3 reps each
    python bench/metrics_overhead.py --rows 50000 --reps 5 --every 0.5

Each rep is the installed ``zbatch run`` against the loopback Z.AI server (tests/zai_server.py,
no latency), once plain and once with a node_exporter textfile and a loopback Pushgateway
(tests/monitor_server.py) written and pushed every ``--every`` seconds (default 1: ten times
as often as the default ``metrics_every``). The two alternate, so a change in the machine's
load falls on both alike. Printed: the child's CPU µs per row (user + system, from
``os.wait4``) for each rep, their medians, and on / off. Target (issue 23): at most 5 % more.
"""

from __future__ import annotations

from common import (
    arg_parser,
    load_average,
    make_jsonl,
    median,
    print_table,
    run_served,
    say,
    spread,
    start,
    work_dir,
)
from monitor_server import MonitorServer  # tests/, on the path common.py sets

TARGET = 1.05


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--every", type=float, default=1.0, help="--metrics-every (seconds)")
    args = start(parser)
    figures: dict[str, list[float]] = {"off": [], "on": []}
    with work_dir("zbatch-metrics-") as work, MonitorServer() as gateway:
        make_jsonl(work / "input.jsonl", args.rows)
        for rep in range(args.reps):
            for mode in ("off", "on"):
                extra: tuple[str, ...] = ()
                if mode == "on":
                    extra = (
                        "--metrics-file", str(work / "zbatch.prom"),
                        "--pushgateway", gateway.url,
                        "--metrics-every", str(args.every),
                    )  # fmt: skip
                run = run_served(work, {}, args.concurrency, *extra)
                if run.summary["rows"]["ok"] != args.rows:
                    raise SystemExit(f"{mode}: {run.summary['rows']} rows, expected {args.rows}")
                figures[mode].append(run.child.cpu_seconds / args.rows * 1e6)
                say(f"  rep {rep + 1}/{args.reps} metrics {mode}: {figures[mode][-1]:.1f} us/row")
        pushes = len(gateway.pushes())
    off, on = median(figures["off"]), median(figures["on"])
    print_table(
        f"zbatch run, {args.rows:,} rows, concurrency {args.concurrency}, loopback server; "
        f"metrics every {args.every:g} s ({pushes} pushes in all); load {load_average():.1f}",
        ["metrics", "CPU us/row (median)", "reps", "spread"],
        [
            ["off", f"{off:.1f}", ", ".join(f"{f:.1f}" for f in figures["off"]),
             spread(figures["off"])],
            ["on", f"{on:.1f}", ", ".join(f"{f:.1f}" for f in figures["on"]),
             spread(figures["on"])],
        ],
    )  # fmt: skip
    verdict = "within" if on / off <= TARGET else "OVER"
    print(f"on / off: {on / off:.3f} ({verdict} the {TARGET:.2f} target)")


if __name__ == "__main__":
    main()
