"""Limits: RPM pacing, an unknown concurrency cap and background 429s, against the fake server.

    python bench/limits.py                          # all three cases (about 4 minutes)
    python bench/limits.py --rpm 1200 --rpm-rows 1300
    python bench/limits.py --skip-rpm --skip-background --cap-reps 3
    python bench/limits.py --skip-rpm --skip-cap --background-share 0.02
    python bench/limits.py --skip-rpm --skip-background --storm --before OLD_VENV/bin/zbatch

(a) ``--rpm R``: the zbatch CLI with --rpm R on the zero-latency server. From the server's
    record of request arrival times (GET /stats ``request_starts``): the achieved rate, and
    the most starts in any 60 s window (what an RPM limit promises), 10 s and 1 s window (no
    bursts). The default run (1,300 rows at R = 1,200) lasts just over 60 s, so a full 60 s
    window is inside it.
(b) Unknown concurrency cap: server ``--max-inflight 6 --latency 0.05`` answers 429/1302 to
    any request above 6 in flight. zbatch with ``--concurrency 48`` (it must find the cap)
    against the oracle ``--concurrency 6`` (it knows it): throughput ratio and the share of
    requests rejected with 1302. Runs alternate; each uses a fresh server subprocess.
(c) Background 429s: server ``--latency 0.1 --rates '{"1302": 0.02}'`` rejects 2 % of requests
    whatever the load. zbatch with ``--concurrency 256`` against the same server without the
    rejections: the throughput ratio (issue 11 asks >= 0.7) and where the concurrency settles.
(d) ``--storm``: server ``--latency 0.05 --rates '{"429": 0.15, "1302": 0.15}'`` rejects 30 %
    of requests whatever the load. zbatch ``--concurrency 64`` against the same server without
    the rejections: the wall-time ratio (issue 25 asks <= 2x), rows lost (in the error log),
    requests, and what the limiter concluded. ``--storm-backoff`` adds runs with other
    ``--backoff-base`` values.

``--before ZBATCH`` runs every case with a second console script too (another tree installed
in its own venv), interleaved with this tree's: before/after ratios from one sitting.

Every zbatch run is the installed console script as a subprocess, with a new OUTDIR, and must
finish with every row in the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import (
    arg_parser,
    make_jsonl,
    median,
    print_table,
    run_served,
    say,
    spread,
    start,
    work_dir,
)
from zai_server import max_in_window


def run_zbatch(
    work: Path,
    server_settings: dict[str, Any],
    rows: int,
    concurrency: int,
    *extra: str,
    program: str | None = None,
    lossy: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """One CLI run against a fresh server: (summary.json, server stats, wall seconds).
    ``lossy``: rows may end in the error log (counted by the caller)."""
    run = run_served(
        work, server_settings, concurrency, *extra, program=program, allow_failed=lossy
    )
    done = run.summary["rows"]["ok"] + (run.summary["rows"]["failed"] if lossy else 0)
    if done != rows:
        raise SystemExit(f"expected {rows} rows ok, summary says {run.summary['rows']}")
    return run.summary, run.stats, run.child.seconds


def rpm_case(work: Path, rpm: float, rows: int, concurrency: int) -> None:
    say(f"(a) --rpm {rpm:g}: {rows:,} rows, expect about {rows / (rpm * 0.98) * 60:.0f} s ...")
    summary, stats, seconds = run_zbatch(work, {}, rows, concurrency, "--rpm", f"{rpm:g}")
    starts = stats["request_starts"]
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span * 60 if span > 0 else float("nan")
    title = (
        f"(a) RPM pacing: zbatch --rpm {rpm:g} --concurrency {concurrency}, {rows:,} rows, "
        f"zero-latency server; {len(starts):,} requests over {span:.1f} s (run {seconds:.1f} s)"
    )
    table_rows = [
        ["achieved rate (starts/min, first to last)", f"{achieved:,.1f}", f"<= {rpm:g}"],
    ]
    most = max_in_window(starts, 60.0)
    covered = "" if span >= 60.0 else " (run shorter than 60 s!)"
    verdict = "ok" if most <= rpm else "OVER"
    table_rows.append([f"most starts in any 60 s window{covered}", most, f"<= {rpm:g} ({verdict})"])
    # Shorter windows are no promise; they show whether starts come in bursts. Evenly spaced
    # starts at the paced rate (zbatch aims at 98% of the cap) give about this many:
    for window in (10.0, 1.0):
        even = rpm * 0.98 * window / 60
        table_rows.append(
            [
                f"most starts in any {window:g} s window (no promise; bursts?)",
                max_in_window(starts, window),
                f"even spacing: {even:.1f}",
            ]
        )
    first_second = sum(1 for s in starts if s - starts[0] < 1.0)
    table_rows.append(["starts in the first second (burst at start-up)", first_second, "-"])
    table_rows.append(["requests / rows", f"{summary['requests']} / {rows}", "-"])
    print_table(title, ["measure", "value", "limit"], table_rows)


Case = tuple[str, int, dict[str, Any]]


def with_before(
    cases: list[Case], before: str | None
) -> list[tuple[str, int, dict[str, Any], str | None]]:
    """Each case for this tree and, with ``before``, for that console script too."""
    out: list[tuple[str, int, dict[str, Any], str | None]] = []
    for name, concurrency, settings in cases:
        if before is not None:
            out.append((f"{name}, before", concurrency, settings, before))
        out.append((name, concurrency, settings, None))
    return out


def compare(
    work: Path, rows: int, reps: int, cases: list[Case], before: str | None = None
) -> list[list[Any]]:
    """Run each ``(name, concurrency, server settings)`` case ``reps`` times, alternating; one
    table row of medians per case, with the rate relative to the first case of its tree."""
    runs: dict[str, list[dict[str, Any]]] = {}
    every = with_before(cases, before)
    for rep in range(1, reps + 1):
        for name, concurrency, settings, program in every:
            summary, stats, seconds = run_zbatch(work, settings, rows, concurrency, program=program)
            runs.setdefault(name, [])
            rejected = stats["errors_by_code"].get("1302", 0)
            run = {
                "rate": rows / seconds,
                "requests": stats["requests"],
                "share": rejected / stats["requests"],
                "final": summary["concurrency"]["final"],
                "minimum": summary["concurrency"]["minimum"],
                "max_inflight": stats["max_inflight_seen"],
            }
            runs[name].append(run)
            say(
                f"  rep {rep}/{reps} {name:<12} c={concurrency:<3} {run['rate']:7.1f} rows/s, "
                f"{rejected} rejected of {stats['requests']}, concurrency min {run['minimum']}"
                f" final {run['final']}; limiter: {summary['concurrency'].get('limiter', '-')}"
            )
    table_rows = []
    for name, concurrency, _, program in every:
        first = cases[0][0] + (", before" if program is not None else "")
        baseline = median([r["rate"] for r in runs[first]])
        values = runs[name]
        rate = median([r["rate"] for r in values])
        table_rows.append(
            [
                f"zbatch --concurrency {concurrency} ({name})",
                f"{rate:,.1f}",
                spread([r["rate"] for r in values]),
                f"{rate / baseline:.2f}",
                round(median([r["requests"] for r in values])),
                f"{median([r['share'] for r in values]):.1%}",
                f"{median([r['minimum'] for r in values]):g} / "
                f"{median([r['final'] for r in values]):g}",
                round(median([r["max_inflight"] for r in values])),
            ]
        )
    return table_rows


HEADERS = [
    "run",
    "rows/s",
    "range",
    "vs {}",
    "requests",
    "1302 share",
    "concurrency min / final",
    "server max in flight",
]


def cap_case(
    work: Path, rows: int, reps: int, cap: int, latency: float, ceiling: int, before: str | None
) -> None:
    settings = {"max_inflight": cap, "latency": latency}
    say(f"(b) unknown cap {cap}: {rows:,} rows, {reps} rep(s) ...")
    table_rows = compare(
        work, rows, reps, [("oracle", cap, settings), ("adaptive", ceiling, settings)], before
    )
    title = (
        f"(b) Unknown concurrency cap: server --max-inflight {cap} --latency {latency:g}, "
        f"{rows:,} rows, {reps} rep(s), medians; ideal {cap / latency:.0f} rows/s"
    )
    print_table(title, [h.format("oracle") for h in HEADERS], table_rows)


def background_case(
    work: Path,
    rows: int,
    reps: int,
    share: float,
    latency: float,
    concurrency: int,
    before: str | None,
) -> None:
    clean = {"latency": latency}
    noisy = {"latency": latency, "rates": json.dumps({"1302": share}), "seed": 1}
    say(f"(c) background 1302s ({share:.0%}): {rows:,} rows, {reps} rep(s) ...")
    table_rows = compare(
        work,
        rows,
        reps,
        [("no 429s", concurrency, clean), (f"{share:.0%} 1302s", concurrency, noisy)],
        before,
    )
    title = (
        f"(c) Background 429s: server --latency {latency:g}, with and without --rates "
        f"'{{\"1302\": {share:g}}}' (rejections whatever the load), {rows:,} rows, {reps} rep(s), "
        f"medians; ideal {concurrency / latency:,.0f} rows/s"
    )
    print_table(title, [h.format("no 429s") for h in HEADERS], table_rows)


def storm_case(work: Path, args: argparse.Namespace) -> None:
    """(d): wall time with and without a storm, rows lost, what the limiter concluded."""
    rows, reps, share = args.storm_rows, args.storm_reps, args.storm_share
    latency, concurrency, before = args.storm_latency, args.storm_concurrency, args.before
    bases = [float(b) for b in args.storm_backoff.split(",") if b]
    clean = {"latency": latency}
    half = share / 2
    stormy = {"latency": latency, "rates": json.dumps({"429": half, "1302": half}), "seed": 1}
    cases: list[tuple[str, dict[str, Any], tuple[str, ...], str | None]] = []
    for program, tree in ([(before, "before")] if before else []) + [(None, "after")]:
        cases.append((f"{tree}: no faults", clean, (), program))
        cases.append((f"{tree}: storm", stormy, (), program))
        for base in bases:
            extra = ("--backoff-base", f"{base:g}")
            cases.append((f"{tree}: storm --backoff-base {base:g}", stormy, extra, program))
    say(f"(d) storm of {share:.0%} 429/1302: {rows:,} rows, c={concurrency}, {reps} rep(s) ...")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _, _ in cases}
    for rep in range(1, reps + 1):
        for name, settings, extra, program in cases:
            summary, stats, seconds = run_zbatch(
                work, settings, rows, concurrency, *extra, program=program, lossy=True
            )
            run = {
                "seconds": seconds,
                "lost": summary["rows"]["failed"],
                "requests": stats["requests"],
                "final": summary["concurrency"]["final"],
                "minimum": summary["concurrency"]["minimum"],
                "limiter": summary["concurrency"].get("limiter", "-"),
            }
            runs[name].append(run)
            say(
                f"  rep {rep}/{reps} {name:<34} {seconds:6.2f} s, {run['lost']} lost, "
                f"{run['requests']} requests, concurrency min {run['minimum']} final "
                f"{run['final']}; limiter: {run['limiter']}"
            )
    table_rows = []
    for name, _, _, _ in cases:
        values = runs[name]
        baseline = median([r["seconds"] for r in runs[name.split(":")[0] + ": no faults"]])
        wall = median([r["seconds"] for r in values])
        table_rows.append(
            [
                name,
                f"{wall:.2f}",
                spread([r["seconds"] for r in values]),
                f"{wall / baseline:.2f}",
                sum(r["lost"] for r in values),
                round(median([r["requests"] for r in values])),
                f"{median([r['minimum'] for r in values]):g} / "
                f"{median([r['final'] for r in values]):g}",
            ]
        )
    title = (
        f"(d) Storm: server --latency {latency:g} with and without {share:.0%} 429/1302 "
        f"(whatever the load), {rows:,} rows, --concurrency {concurrency}, {reps} rep(s), "
        "medians; wall relative to the same tree without faults"
    )
    headers = ["run", "wall s", "range", "vs no faults", "rows lost (all reps)", "requests"]
    print_table(title, [*headers, "concurrency min / final"], table_rows)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--rpm-rows", type=int, default=1300, help="rows in the RPM case")
    parser.add_argument("--rpm-concurrency", type=int, default=16)
    parser.add_argument("--cap", type=int, default=6, help="server --max-inflight")
    parser.add_argument("--cap-latency", type=float, default=0.05, help="server --latency")
    parser.add_argument("--ceiling", type=int, default=48, help="zbatch --concurrency")
    parser.add_argument("--cap-rows", type=int, default=1500)
    parser.add_argument("--cap-reps", type=int, default=2)
    parser.add_argument("--background-share", type=float, default=0.02, help="1302 rate")
    parser.add_argument("--background-latency", type=float, default=0.1, help="server --latency")
    parser.add_argument("--background-concurrency", type=int, default=256)
    parser.add_argument("--background-rows", type=int, default=20_000)
    parser.add_argument("--background-reps", type=int, default=2)
    parser.add_argument("--storm", action="store_true", help="run case (d)")
    parser.add_argument("--storm-share", type=float, default=0.3)
    parser.add_argument("--storm-latency", type=float, default=0.05)
    parser.add_argument("--storm-concurrency", type=int, default=64)
    parser.add_argument("--storm-rows", type=int, default=5000)
    parser.add_argument("--storm-reps", type=int, default=2)
    parser.add_argument(
        "--storm-backoff", default="", help="comma-separated --backoff-base values to add"
    )
    parser.add_argument("--before", help="another tree's zbatch console script, interleaved")
    parser.add_argument("--skip-rpm", action="store_true")
    parser.add_argument("--skip-cap", action="store_true")
    parser.add_argument("--skip-background", action="store_true")
    args = start(parser)
    with work_dir("zbatch-limits-") as work:
        if not args.skip_rpm:
            make_jsonl(work / "input.jsonl", args.rpm_rows)
            rpm_case(work, args.rpm, args.rpm_rows, args.rpm_concurrency)
        if not args.skip_cap:
            make_jsonl(work / "input.jsonl", args.cap_rows)
            cap_case(
                work,
                args.cap_rows,
                args.cap_reps,
                args.cap,
                args.cap_latency,
                args.ceiling,
                args.before,
            )
        if not args.skip_background:
            make_jsonl(work / "input.jsonl", args.background_rows)
            background_case(
                work,
                args.background_rows,
                args.background_reps,
                args.background_share,
                args.background_latency,
                args.background_concurrency,
                args.before,
            )
        if args.storm:
            make_jsonl(work / "input.jsonl", args.storm_rows)
            storm_case(work, args)


if __name__ == "__main__":
    main()
