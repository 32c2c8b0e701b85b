"""zbatch as a library: each command is one function here, and the CLI only translates.

    import zbatch
    job = zbatch.Job.from_toml("jobs/sentiment.toml", simulate=True)
    result = zbatch.run(job)              # in a script
    result = await zbatch.arun(job)       # in a notebook cell or an async worker
    table = zbatch.read_results(job.output_dir)

The library installs no signal handler and never exits the process unless asked
(``handle_signals=True``, which the CLI passes); an ``api_key`` passed in is used, never
stored; OUTDIR/run.log gets the run's events whatever the caller's logging setup.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyarrow as pa

from .errors import JobError, ZbatchError
from .execution.options import RunOptions, shard_of
from .job.settings import Job
from .progress import Progress
from .progress import default as default_progress
from .shard import Shard
from .store import OutputDir
from .store.state import RetryFailed, retry_failed_problem

if TYPE_CHECKING:
    import httpx

    from .execution.plan import Plan
    from .execution.setup import RunResult
    from .results.export import Exported
    from .results.failures import FailureGroup
    from .results.quality import Report
    from .results.review import Reviewed
    from .results.status import Status


P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Compacted:
    """What compaction did to one table of an OUTDIR."""

    table: str
    parts_before: int
    parts_after: int


async def arun(
    job: Job,
    *,
    api_key: str | None = None,
    progress: Progress | None = None,
    handle_signals: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_failed: RetryFailed = False,
    force: bool = False,
    limit: int | None = None,
    shard: Shard | str | None = None,
    cluster: str | None = None,
    wait: bool = True,
) -> RunResult:
    """Run (or resume) a job inside a running event loop.

    ``api_key`` defaults to the environment variable the job names. ``transport`` replaces
    the HTTP transport (tests pass ``httpx.MockTransport``). ``limit`` sends only the first
    that many pending rows (a paid sample; the next run goes on with the rest). ``shard``
    ("K/N", "auto/N" or a :class:`~zbatch.shard.Shard`) runs only that shard's rows;
    ``cluster`` ("local:N" or "dask://HOST:PORT") runs the whole job as shard tasks on a
    Dask cluster. In batch mode (``job.mode == "batch"``), ``wait=False`` returns once the
    rows are submitted (exit code 10 while batches run); the same call later collects them.
    Raises JobError / LockedError / StoreError before anything is sent; a stop during the run
    is in ``RunResult.stopped``. :func:`run` is the same, blocking.

    The keywords are gathered once into a :class:`~zbatch.execution.options.RunOptions`
    (``limit`` is its ``max_rows``), which goes down whole to the run's setup. The job's
    ``ping``, ``metrics_file`` and ``pushgateway`` settings are served around the run (README
    "Running it on a schedule")."""
    # With a run, not with the module: `zbatch status` starts without the run's machinery.
    from .ops.watch import Watch

    _check_retry_failed(retry_failed)
    if job.mode != "batch" and not wait:
        raise JobError('wait=False (--no-wait) only goes with batch mode (run.mode = "batch")')
    options = RunOptions(
        api_key=api_key,
        progress=default_progress(progress),  # in a Jupyter notebook: a tqdm.auto bar
        handle_signals=handle_signals,
        transport=transport,
        retry_failed=retry_failed,
        force=force,
        max_rows=limit,
        shard=shard_of(shard),
        wait=wait,
    )
    watch = Watch(job, options.shard) if Watch.wanted(job) else None
    if watch is not None:
        options = dataclasses.replace(options, progress=watch.begin(options.progress))
    try:
        result = await _run_where_asked(job, cluster, options)
    except ZbatchError as exc:
        if watch is not None:
            await watch.end(exc.exit_code, None)
        raise
    if watch is not None:
        await watch.end(result.exit_code, result.stats)
    return result


async def _run_where_asked(job: Job, cluster: str | None, options: RunOptions) -> RunResult:
    """The run :func:`arun` asks for: on a cluster, or in this process (then the batches'
    leftovers live, with ``finish_online``)."""
    # The run's machinery (the journal, anyio, the HTTP stack) comes with the first run: the
    # commands that only read an OUTDIR start without it (docs/performance.md).
    from .execution.setup import execute

    shard = options.shard
    if job.mode == "batch" and (shard is not None or cluster is not None):
        raise JobError(
            "--mode batch does not go with --shard or --cluster: the provider runs the batches; "
            "run the job once, without them"
        )
    if cluster is not None:
        if shard is not None or options.max_rows is not None:
            what = "--shard" if shard is not None else "--limit"
            raise JobError(f"{what} and --cluster do not go together: --cluster makes the shards")
        from .cluster.driver import arun_on_cluster

        return await arun_on_cluster(job, cluster, options)
    if shard is not None and options.force:
        raise JobError(
            "--force with --shard would move the other shards' results away: start the new "
            "generation with one run without --shard, or use a new output directory"
        )
    result = await execute(job, options)
    if job.mode == "batch" and job.finish_online:
        from .batch.mode import RowsLeft

        if not isinstance(result.stopped, RowsLeft | None):
            return result
        # Every batch is collected: what they left unanswered goes live, exactly once.
        transport = None if job.simulate else options.transport
        live = dataclasses.replace(options, transport=transport, force=False, max_rows=None)
        return await execute(dataclasses.replace(job, mode="online", finish_online=False), live)
    return result


def blocking(function: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """The blocking twin of an async API function.

    It works from a plain script, and from a thread whose event loop is already running (a
    notebook cell calling the sync API): the call then gets an event loop of its own in a
    helper thread."""

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        import anyio  # with the run, not with the module (see arun)

        start = functools.partial(function, *args, **kwargs)
        try:
            return anyio.run(start)
        except RuntimeError as exc:
            if "running" not in str(exc):  # anyio: "Already running asyncio in this thread"
                raise
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="zbatch") as pool:
            return pool.submit(anyio.run, start).result()

    return call


run = blocking(arun)
run.__doc__ = """Run (or resume) a job to the end, blocking; the same keywords as :func:`arun`."""
run.__name__ = run.__qualname__ = "run"


async def acancel(
    outdir: str | os.PathLike[str], *, api_key: str | None = None
) -> list[dict[str, Any]]:
    """Cancel the open batches of a batch-mode OUTDIR; the next run collects what they
    finished. Returns the cancelled batches as ``status`` lists them."""
    from .batch.api import BatchApi
    from .batch.ledger import describe, open_batches
    from .batch.mode import cancel_open
    from .providers import provider_for

    target = OutputDir(str(outdir))
    settings = target.read_job()["settings"]
    if settings.get("mode") != "batch" and not open_batches(target.storage):
        raise JobError(
            f"{target.location} holds an online run: it has no batches to cancel (cancel is "
            "for --mode batch; an online run stops on Ctrl-C or SIGTERM)"
        )
    job_key = RunOptions(api_key=api_key).key(settings["api_key_env"])
    transport = None
    if settings.get("simulate"):  # a rehearsal's batches are at the simulated provider
        from .batch.simulate import SimulatedBatchApi

        transport = SimulatedBatchApi(Job(**settings))
    api = BatchApi(
        provider_for(settings["base_url"], settings.get("provider")),
        base_url=settings["base_url"],
        api_key=job_key,
        timeout=settings["timeout"],
        transport=transport,
    )
    with target.locked():
        cancelled = await cancel_open(target.storage, api)
    return [describe(submission) for submission in cancelled]


cancel = blocking(acancel)
cancel.__doc__ = """Cancel an OUTDIR's open batches, blocking; see :func:`acancel`."""
cancel.__name__ = cancel.__qualname__ = "cancel"


def plan(job: Job, *, retry_failed: RetryFailed = False) -> Plan:
    """What a run of the job would send now and what it would cost; sends nothing."""
    from .execution.plan import plan_job  # reads the input as a run does: with a run's imports

    _check_retry_failed(retry_failed)
    return plan_job(job, retry_failed=retry_failed)


def _check_retry_failed(retry_failed: RetryFailed) -> None:
    problem = retry_failed_problem(retry_failed)
    if problem is not None:
        raise JobError(f"retry_failed: {problem}")


def status(outdir: str | os.PathLike[str]) -> Status:
    """Done / failed / pending counts, tokens, cost and the last run's outcome of an OUTDIR."""
    from .results.status import read_status  # here: a run needs none of the readers till its end

    return read_status(OutputDir(str(outdir)))


def failures(
    outdir: str | os.PathLike[str],
    *,
    error_type: str | None = None,
    limit: int = 5,
    answers: bool = False,
) -> list[FailureGroup]:
    """The failed rows of an OUTDIR grouped by error type and code, largest group first;
    ``answers`` adds up to ``limit`` paid answers per group (the error log's answer column)."""
    from .results.failures import failure_groups

    return failure_groups(
        OutputDir(str(outdir)), error_type=error_type, sample=limit, answers=answers
    )


def read_log(outdir: str | os.PathLike[str], start: int = 0) -> tuple[str, int]:
    """OUTDIR/run.log from byte ``start`` to its last whole line, and the offset to read on
    from: call again with it to follow the log as runs write it (``zbatch logs -f``)."""
    from .results.logs import read_log as read

    return read(OutputDir(str(outdir)), start)


def export(
    outdir: str | os.PathLike[str], path: str | os.PathLike[str], *, with_input: bool = False
) -> Exported:
    """Write the final outcome of every id to .parquet, .jsonl or .csv."""
    from .results.export import export_outcomes

    return export_outcomes(OutputDir(str(outdir)), str(path), with_input=with_input)


def read_results(outdir: str | os.PathLike[str]) -> pa.Table:
    """The final outcome of every id, as ``export`` writes it, as an Arrow table (its schema
    metadata says ``zbatch.simulated: true`` when the answers came from --simulate)."""
    from .results.outcomes import final_outcomes

    outcomes = final_outcomes(OutputDir(str(outdir)))
    return pa.Table.from_batches(list(outcomes.batches), outcomes.schema)


def report(
    outdir: str | os.PathLike[str],
    *,
    gold: str | None = None,
    against: str | os.PathLike[str] | None = None,
    html: str | os.PathLike[str] | None = None,
) -> Report:
    """The quality report of an OUTDIR: counts, spend, latency, throughput and, per label
    column, distribution and scores against the input's ``gold`` column (default: the job's
    labels.gold_column) and against the OUTDIR ``against``. ``html`` also writes the report as
    one self-contained page with charts (needs ``zbatch[report]``)."""
    from .results.quality import build_report  # here: `status` and a run's start need none of it

    other = None if against is None else OutputDir(str(against))
    figures = build_report(OutputDir(str(outdir)), gold=gold, against=other)
    if html is not None:
        from .results.page import write_html

        write_html(figures, str(html))
    return figures


def review(
    outdir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    gold: str | None = None,
    against: str | os.PathLike[str] | None = None,
    limit: int = 100,
    format: str | None = None,
) -> Reviewed:
    """Write the ``limit`` rows of an OUTDIR most worth a human look (wrong against the
    ``gold`` column, different in the OUTDIR ``against``, split samples, invalid answers) with
    why each was picked and the input's columns: .csv, .jsonl, or ``format="label-studio"``."""
    from .results.review import review as pick_rows

    other = None if against is None else OutputDir(str(against))
    return pick_rows(
        OutputDir(str(outdir)), str(path), gold=gold, against=other, limit=limit, format=format
    )


def compact(outdir: str | os.PathLike[str]) -> list[Compacted]:
    """Merge each table's part files into one, under every shard's lock. A reader of the
    folder never sees an id twice; for a moment between the old parts going and the merged
    part arriving it may see fewer rows (a crash there is finished by the next command)."""
    target = OutputDir(str(outdir))
    target.read_job()  # a folder that is not an OUTDIR is refused, and left as it was
    return [Compacted(*row) for row in target.compact()]
