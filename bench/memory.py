"""Memory: peak RSS of the ``zbatch`` CLI at 100k and 1M rows; resume, export and compact.

    python bench/memory.py                                  # 100k and 1M rows, Parquet and JSONL
    python bench/memory.py --sizes 20000,100000 --formats parquet

For each size and format: a fresh zero-latency fake server subprocess, then the installed
``zbatch run`` console script as a subprocess (concurrency 64, --part-rows 50000, progress log
lines on) on a new OUTDIR. Reported: wall seconds, rows/s, and the child's peak RSS from
``os.wait4`` (its own ru_maxrss, taken by a small launcher: see ``common.run_child``). Every
run must exit 0 with every row in the results.

Then the resume cost: the same command again on the finished OUTDIR of the largest size
(every row already committed), against a fresh server: seconds until exit, peak RSS, and the
requests the server received (must be 0). ``zbatch --version`` gives the interpreter +
import baseline of both figures. A breakdown of the resume's steps (zbatch's own functions, in
this process) follows.

Last, on the largest OUTDIR of the first format: ``zbatch export OUTDIR -o all.parquet`` (seconds,
peak RSS; the file must hold one row per input id), ``zbatch compact OUTDIR`` (seconds, peak
RSS, parts before and after; the results must still hold every id), and the resume once more
on the compacted OUTDIR (one part holding every result).

At 1M rows a run takes as long as 1M requests do (about 10 minutes on 2 cores); progress is
printed every 30 s.

With ``--s3`` each size and format also runs with its input and OUTDIR on a loopback S3 (moto's
server in this process, reached through ``AWS_ENDPOINT_URL``; needs ``pip install -e
".[test,s3]"``), and the peak RSS is compared with the local run's (target: within 1.2x):

    python bench/memory.py --sizes 1000000 --formats parquet --s3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import (
    ZBATCH,
    ChildRun,
    arg_parser,
    bench_env,
    fake_server,
    make_jsonl,
    make_parquet,
    print_table,
    run_child,
    say,
    start,
    table,
    vm_hwm_mb,
    zbatch_cli,
)

TARGET_PEAK_MB = 300
TARGET_GROWTH_MB = 100
TARGET_RESUME_S = 5.0
TARGET_S3_RATIO = 1.2


def _progress(label: str, outdir: Path | None) -> Callable[[float, int], None]:
    """A ``run_child`` tick: the peak RSS so far, and the parts committed to a local
    ``outdir`` (None: the OUTDIR is on S3)."""

    def tick(elapsed: float, pid: int) -> None:
        committed = ""
        if outdir is not None:
            parts = len(list((outdir / "results").glob("part-*.parquet")))
            committed = f"{parts} parts committed, "
        peak = vm_hwm_mb(pid)
        shown = f"{peak:,.0f} MB" if peak is not None else "-"
        say(f"    {label}: {elapsed:6.0f} s, {committed}peak RSS so far {shown}")

    return tick


def _command(
    input_path: Path | str, outdir: Path | str, base_url: str, args: argparse.Namespace
) -> list[str]:
    """The ``zbatch run`` every case measures: progress lines every 30 s, ``--part-rows``."""
    return zbatch_cli(
        input_path,
        outdir,
        base_url,
        args.concurrency,
        "--part-rows",
        str(args.part_rows),
        "--log-every",
        "30",
    )


def run_case(
    label: str,
    input_path: Path,
    outdir: Path,
    args: argparse.Namespace,
    rows: int,
    *,
    ask_server: bool = False,
) -> tuple[ChildRun, int]:
    """One ``zbatch run`` against a fresh server; returns the child's figures and requests.

    Requests come from summary.json, or from the server with ``ask_server`` (its /stats
    reply lists every answered prompt, so it is only asked after runs that sent few).
    """
    with fake_server() as server:
        child = run_child(
            _command(input_path, outdir, server.base_url, args),
            env=bench_env(),
            on_tick=_progress(label, outdir),
            tick_seconds=30.0,
            workdir=outdir.parent,
        )
        requests = int(server.stats()["requests"]) if ask_server else -1
    child.check(f"{label}: zbatch")
    summary = json.loads((outdir / "summary.json").read_text())
    settled = summary["rows"]["ok"] + summary["rows"]["skipped_already_done"]
    if settled != rows or summary["rows"]["failed"]:
        raise SystemExit(f"{label}: expected {rows} rows done, summary says {summary['rows']}")
    return child, requests if ask_server else int(summary["requests"])


S3 = tuple[Any, dict[str, str]]  # an s3fs client, the environment that reaches the server


@contextlib.contextmanager
def moto_s3() -> Iterator[S3]:
    """A loopback S3 with one bucket: (an s3fs client, the environment that reaches it)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "AKIABENCHMARK0000000",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-not-a-real-one",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    fs = s3fs.S3FileSystem(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        use_listings_cache=False,
    )
    fs.mkdir("bench")
    try:
        yield fs, env
    finally:
        server.stop()


def run_s3_case(
    label: str,
    input_path: Path,
    args: argparse.Namespace,
    rows: int,
    s3: tuple[Any, dict[str, str]],
) -> ChildRun:
    """The same ``zbatch run`` as :func:`run_case`, with the input and OUTDIR on the S3."""
    fs, env = s3
    key = f"bench/{input_path.name}"
    fs.put(str(input_path), key)
    outdir = f"bench/out-{input_path.stem}-{input_path.suffix[1:]}"
    with fake_server() as server:
        child = run_child(
            _command(f"s3://{key}", f"s3://{outdir}", server.base_url, args),
            env=bench_env(**env),
            on_tick=_progress(label, None),
            tick_seconds=30.0,
        )
    child.check(f"{label}: zbatch")
    summary = json.loads(fs.cat_file(f"{outdir}/summary.json"))
    if summary["rows"]["ok"] != rows or summary["rows"]["failed"]:
        raise SystemExit(f"{label}: expected {rows} rows done, summary says {summary['rows']}")
    fs.rm(outdir, recursive=True)  # moto keeps objects in this process's memory
    fs.rm(key)
    return child


def resume_breakdown(input_path: Path, outdir: Path) -> list[list[Any]]:
    """Where a resume's time goes, step by step, in this process (zbatch's own functions).

    The workers read the input with ``InputFiles.rows_or_done``: a block of rows (a Parquet
    batch, or JSONL lines parsed by Arrow) whose ids are all done comes as ids only
    (``DoneRows``), any other row as a dict. Every id then
    goes through the repeated-id set (``IdSet``) and, for a dict row, ``is_done``.
    """
    import resource
    import time

    from zbatch import Job, prompt, source
    from zbatch.idset import IdSet
    from zbatch.store import OutputDir

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    steps: list[list[Any]] = []

    def step(name: str, fn: Any) -> Any:
        started = time.perf_counter()
        value = fn()
        steps.append([name, f"{time.perf_counter() - started:.2f}", round(rss_mb())])
        return value

    job = Job(input_path=str(input_path), output_dir=str(outdir))
    inputs = source.open_input(job.input_path)
    state = step("OutputDir.load_state (ids of committed parts)", OutputDir(str(outdir)).load_state)
    step("source.count_rows", lambda: source.count_rows(inputs.paths))
    step("read every row as a dict (InputFiles.rows)", lambda: sum(1 for _ in inputs.rows()))

    def items() -> Any:
        return inputs.rows_or_done(job.id_column, state.all_done)

    step("read as the run does (InputFiles.rows_or_done)", lambda: sum(1 for _ in items()))

    def settle() -> int:
        seen, done = IdSet(), 0
        for item in items():
            if isinstance(item, source.DoneRows):
                done += len(item.ids) - len(seen.add_many(item.ids))
                continue
            row_id = prompt.row_id(item.data or {}, job.id_column)
            done += row_id is not None and seen.add(row_id) and state.is_done(row_id)
        return done

    step("... + IdSet.add_many / add + is_done (the run's path)", settle)
    return steps


RESUME_HEADERS = ["run", "seconds to exit", "peak RSS MB", "CPU s", "requests sent", "target"]


def resume(
    label: str, input_path: Path, outdir: Path, args: argparse.Namespace, rows: int
) -> list[Any]:
    """The same ``zbatch run`` again on a finished OUTDIR: a table row, checked on target (5)."""
    child, requests = run_case(label, input_path, outdir, args, rows, ask_server=True)
    fits = child.seconds <= TARGET_RESUME_S and child.peak_rss_mb <= TARGET_PEAK_MB
    verdict = "meets" if fits and requests == 0 else "misses"
    return [
        label,
        round(child.seconds, 2),
        round(child.peak_rss_mb),
        round(child.cpu_seconds, 2),
        requests,
        f"{verdict} (<= {TARGET_RESUME_S:g} s, <= {TARGET_PEAK_MB} MB, 0 requests)",
    ]


def export_and_compact(work: Path, outdir: Path, rows: int) -> list[list[Any]]:
    """Time ``zbatch export`` and then ``zbatch compact`` on a finished OUTDIR; check both."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from zbatch.store import RESULTS, OutputDir

    exported = work / "export.parquet"
    say(f"  zbatch export {outdir.name} ...")
    export = run_child([ZBATCH, "export", str(outdir), "-o", str(exported)], workdir=work)
    export.check("zbatch export")
    ids = pq.read_table(exported, columns=["id"]).column("id")
    unique = pc.count_distinct(ids).as_py()
    if len(ids) != rows or unique != rows:
        raise SystemExit(f"export holds {len(ids)} rows, {unique} unique ids; expected {rows}")
    before = len(OutputDir(str(outdir)).parts(RESULTS).names)
    say(f"  zbatch compact {outdir.name} ...")
    compact = run_child([ZBATCH, "compact", str(outdir)], workdir=work)
    compact.check("zbatch compact")
    after = [outdir / RESULTS / name for name in OutputDir(str(outdir)).parts(RESULTS).names]
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in after)
    if kept != rows:
        raise SystemExit(f"after compact the results hold {kept} rows; expected {rows}")
    return [
        [
            f"zbatch export OUTDIR -o {exported.name}",
            round(export.seconds, 2),
            round(export.peak_rss_mb),
            f"{len(ids):,} rows, {unique:,} unique ids",
        ],
        [
            "zbatch compact OUTDIR",
            round(compact.seconds, 2),
            round(compact.peak_rss_mb),
            f"results: {before} parts -> {len(after)}, {kept:,} rows",
        ],
    ]


S3_HEADERS = ["input", "rows", "local s", "s3 s", "local peak MB", "s3 peak MB", "ratio", "target"]


def s3_row(key: tuple[str, int], local: ChildRun, remote: ChildRun) -> list[Any]:
    ratio = remote.peak_rss_mb / local.peak_rss_mb
    verdict = "meets" if ratio <= TARGET_S3_RATIO else "misses"
    return [
        key[0],
        key[1],
        round(local.seconds, 1),
        round(remote.seconds, 1),
        round(local.peak_rss_mb),
        round(remote.peak_rss_mb),
        f"{ratio:.2f}x",
        f"{verdict} (<= {TARGET_S3_RATIO}x)",
    ]


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--formats", default="parquet,jsonl", help="parquet, jsonl or both")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--part-rows", type=int, default=50_000)
    parser.add_argument("--workdir", help="where inputs and OUTDIRs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the inputs and OUTDIRs")
    parser.add_argument(
        "--s3", action="store_true", help="also run each case on a loopback S3 (moto)"
    )
    args = start(parser)
    sizes = sorted(int(v) for v in args.sizes.split(",") if v.strip())
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="zbatch-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"zbatch CLI subprocess ({ZBATCH}), concurrency {args.concurrency}, "
        f"--part-rows {args.part_rows}, zero-latency fake server (fresh subprocess per run); "
        "peak RSS from wait4\n"
    )
    say(f"work dir: {work}")
    with contextlib.ExitStack() as stack:
        run_all(args, sizes, formats, work, stack)


def run_all(
    args: argparse.Namespace,
    sizes: list[int],
    formats: list[str],
    work: Path,
    stack: contextlib.ExitStack,
) -> None:
    """Every case, then the summaries; the work dir goes at the end unless kept."""
    try:
        baseline = run_child([ZBATCH, "--version"], env=bench_env(), workdir=work)
        runs: dict[tuple[str, int], tuple[ChildRun, int]] = {}
        outdirs: dict[tuple[str, int], Path] = {}
        s3_runs: dict[tuple[str, int], ChildRun] = {}
        s3 = stack.enter_context(moto_s3()) if args.s3 else None
        for rows in sizes:
            for fmt in formats:
                input_path = work / f"in-{rows}.{fmt}"
                say(f"making {input_path.name} ...")
                if fmt == "parquet":
                    make_parquet(input_path, rows)
                else:
                    make_jsonl(input_path, rows)
                outdir = work / f"out-{fmt}-{rows}"
                shutil.rmtree(outdir, ignore_errors=True)
                label = f"{fmt} {rows:,}"
                say(f"  running zbatch on {label} rows ...")
                runs[(fmt, rows)] = run_case(label, input_path, outdir, args, rows)
                outdirs[(fmt, rows)] = outdir
                child, _ = runs[(fmt, rows)]
                say(
                    f"  {label}: {child.seconds:,.1f} s, {rows / child.seconds:,.0f} rows/s, "
                    f"peak RSS {child.peak_rss_mb:,.0f} MB"
                )
                if s3 is not None:
                    say(f"  running zbatch on {label} rows, input and OUTDIR on s3 ...")
                    s3_runs[(fmt, rows)] = run_s3_case(f"s3 {label}", input_path, args, rows, s3)
                    remote = s3_runs[(fmt, rows)]
                    say(f"  s3 {label}: {remote.seconds:,.1f} s, peak {remote.peak_rss_mb:,.0f} MB")
        table_rows = []
        for (fmt, rows), (child, _) in runs.items():
            verdict = "meets" if child.peak_rss_mb <= TARGET_PEAK_MB else "misses"
            table_rows.append(
                [
                    fmt,
                    rows,
                    round(child.seconds, 1),
                    round(rows / child.seconds),
                    round(child.cpu_seconds / rows * 1e6),
                    round(child.peak_rss_mb),
                    f"{verdict} (<= {TARGET_PEAK_MB} MB)",
                ]
            )
        print(
            table(
                ["input", "rows", "wall s", "rows/s", "CPU us/row", "peak RSS MB", "target"],
                table_rows,
            )
        )
        if s3_runs:
            print_table(
                "Input and OUTDIR on a loopback S3 (moto) against the same run on local disk:",
                S3_HEADERS,
                [s3_row(key, runs[key][0], s3_runs[key]) for key in s3_runs],
            )
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            growth_rows = []
            for fmt in formats:
                growth = runs[(fmt, large)][0].peak_rss_mb - runs[(fmt, small)][0].peak_rss_mb
                verdict = "meets" if growth <= TARGET_GROWTH_MB else "misses"
                growth_rows.append([fmt, round(growth), f"{verdict} (<= {TARGET_GROWTH_MB} MB)"])
            title = f"Peak RSS growth from {small:,} to {large:,} rows:"
            print_table(title, ["input", "growth MB", "target"], growth_rows)

        largest = sizes[-1]
        resume_rows = [
            [
                "zbatch --version (baseline)",
                round(baseline.seconds, 2),
                round(baseline.peak_rss_mb),
                "-",
                "-",
                "-",
            ]
        ]
        for fmt in formats:
            input_path = work / f"in-{largest}.{fmt}"
            say(f"  resuming {fmt} {largest:,} ...")
            label = f"resume, {fmt} input"
            resume_rows.append(resume(label, input_path, outdirs[(fmt, largest)], args, largest))
        title = f"Resume on a finished OUTDIR ({largest:,} committed results), same command:"
        print_table(title, RESUME_HEADERS, resume_rows)
        fmt = formats[0]
        say(f"  resume breakdown ({fmt}) ...")
        breakdown = resume_breakdown(work / f"in-{largest}.{fmt}", outdirs[(fmt, largest)])
        title = f"Where the resume time goes ({fmt}, {largest:,} rows; in-process, cumulative RSS):"
        print_table(title, ["step", "seconds", "peak RSS MB so far"], breakdown)
        finished = export_and_compact(work, outdirs[(fmt, largest)], largest)
        title = f"Export and compact on the finished {fmt} OUTDIR ({largest:,} rows):"
        print_table(title, ["command", "seconds", "peak RSS MB", "check"], finished)
        say(f"  resuming {fmt} {largest:,} after compact ...")
        label = f"resume, {fmt} input, compacted"
        compacted = resume(
            label, work / f"in-{largest}.{fmt}", outdirs[(fmt, largest)], args, largest
        )
        title = f"Resume on the compacted {fmt} OUTDIR (one part of {largest:,} rows):"
        print_table(title, RESUME_HEADERS, [compacted])
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
