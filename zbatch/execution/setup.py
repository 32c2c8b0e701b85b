"""One run of a job (or of one shard of it), assembled in one place, in four steps:

    prepare   the input and the API key checked; the OUTDIR held (lock, tidy, a killed run's
              journal replayed, job.json checked and saved); the rows counted; run.log open
    build     the parts every way of dispatching shares (part writers, journal, budget,
              figures, the row pipeline) in a RunContext, then the family's own parts and its
              dispatcher: ``build(ctx, options)`` of zbatch.online.runner or zbatch.batch.mode
    run       the dispatcher's run(), until the input is used up or something stops it
    finish    the result and exit code in the figures, summary.json, run.log's last line

:func:`execute` does the four for ``arun``, ``--shard`` and a cluster's shard task. The cluster
driver (:mod:`zbatch.cluster.driver`) runs :func:`prepare` (``tasks=True``: the OUTDIR is left
to its shard tasks) and :func:`finish` around its tasks; the dry run (:mod:`.plan`) checks the
input with :func:`check_input`; cancel takes its key from :meth:`RunOptions.key`, like a run.

Hooks that watch a whole run (metrics, reports) belong in :func:`finish` or beside the
dispatcher's run in :func:`execute`; per-run parts every family needs go in :func:`build`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .. import prompt
from ..batch.ledger import Ledger
from ..budget import Budget
from ..dispatch import Build, RunContext
from ..errors import JobError, ZbatchError
from ..idset import IdSet
from ..job.settings import Job
from ..limits import Backoff
from ..ops import events
from ..ops.manifest import RunInfo, last_success, record
from ..ops.manifest import write as write_manifest
from ..pipeline import RowPipeline
from ..schema import ERROR_SCHEMA, infer_type, result_schema
from ..shard import Shard
from ..source import STDIN, InputFiles, count_rows, open_input
from ..stats import Stats
from ..store import ERRORS, RESULTS, OutputDir, ResumeState, room_error
from ..store.journal import JournaledSink
from ..store.session import RunSession, open_run
from .options import RunOptions
from .runlog import log_end, run_log


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves: its figures and why it stopped, if it did."""

    stats: Stats
    stopped: ZbatchError | None
    notice: str | None = None  # what --force did, when it did something
    manifest: dict[str, Any] | None = None  # what summary.json (or the shard's) got

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped.exit_code
        return 1 if self.stats.failed else 0


@dataclass
class Prepared:
    """A run between :func:`prepare` and :func:`finish`: its input, its OUTDIR, its figures,
    its run.log, and what its manifest records."""

    job: Job
    inputs: InputFiles
    session: RunSession
    schema: pa.Schema  # of the result parts this run writes
    input_rows: int
    where: str  # how log lines name the run: "" or " shard 3/8"
    info: RunInfo  # the manifest's fixed part (zbatch.ops.manifest)
    stats: Stats  # the run's figures
    api_key: str | None = field(repr=False)
    log: logging.Logger = field(init=False)
    # What each run.log line carries: the run's figures, or the cluster driver's view of its
    # tasks' (it sets its own).
    figures: Callable[[], Stats] = field(init=False)

    @property
    def outdir(self) -> OutputDir:
        return self.session.outdir


async def execute(job: Job, options: RunOptions) -> RunResult:
    """:func:`zbatch.arun` for the whole job or one shard (``options.shard``), in this process:
    prepare → build → run → finish."""
    with prepare(job, options) as prepared:
        with build(prepared, options) as ctx:
            _log_start(prepared)
            dispatcher = _builder(job)(ctx, options)
            stopped = await dispatcher.run()
        stats = ctx.stats
        # What the run kept per id (the done ids and the repeated-id set, ~100 MB each at ten
        # million rows) is not needed to finish: it goes before the report reads the OUTDIR.
        # Reference cycles still hold it (the pipeline's, its readers'): collected now, not
        # whenever the collector would next run (after the report, at ten million rows).
        # The freed pages then go back to the system: the CLI's allocator keeps them
        # otherwise (~8 MB under the report's peak at 200,000 rows).
        del ctx, dispatcher
        prepared.session.state = ResumeState()
        gc.collect()
        pa.default_memory_pool().release_unused()
        if options.shard is not None and stopped is None:
            stats.total = stats.input_rows
        also: dict[str, Any] | None = {} if options.write_summary else None
        # The report page is the whole job's: a shard or a cluster's task leaves it to others.
        report = job.report and options.shard is None and options.write_summary
        return finish(prepared, stats, stopped, summary=also, report=report)


# --- prepare ----------------------------------------------------------------------------------


@contextlib.contextmanager
def prepare(job: Job, options: RunOptions, *, tasks: bool = False) -> Iterator[Prepared]:
    """Check the input and the key, hold the OUTDIR, count the rows, open run.log.

    ``tasks``: the run is split into shard tasks (the cluster driver): job.json is settled
    (and --force applied) once here, then the OUTDIR is let go for the tasks to hold."""
    # Another run holding these ids is refused at once (exit 75), before the input is read.
    shard = options.shard
    with OutputDir(job.output_dir).locked(None if shard is None else (shard.index, shard.count)):
        pass
    inputs = check_input(job, stdin=options.shard is None and not tasks)
    key = check_key(job, options, transport=None if tasks else options.transport)
    with contextlib.ExitStack() as held:
        session, schema = held.enter_context(open_session(job, inputs, options))
        if tasks:
            held.close()
        input_rows = count_rows(inputs.paths)  # reads a JSONL or CSV input to the end
        name = None if shard is None else str(shard)
        info = RunInfo.begin(
            session.prefix,
            shard=name,
            tag=session.tag,
            job_fingerprint=job.fingerprint(),
            paths=inputs.paths,
        )
        stats = _figures(job, session.outdir, None if name else input_rows)
        where = "" if name is None else f" shard {name}"
        prepared = Prepared(job, inputs, session, schema, input_rows, where, info, stats, key)
        prepared.figures = lambda: stats
        context = events.RunContext(session.prefix, name or "all", lambda: prepared.figures())
        with run_log(session.outdir, job.log_format, context) as log:
            prepared.log = log
            if session.notice:
                log.warning(session.notice)
            for warning in session.warnings:
                log.warning(warning)
            if session.replayed:
                log.warning(
                    "replayed %d answers from the journal of a run that was cut off",
                    session.replayed,
                )
            yield prepared


def _figures(job: Job, outdir: OutputDir, total: int | None) -> Stats:
    """A run's figures at its start: ``total`` rows (None for a shard, whose rows are known
    once its part of the input is read), what the OUTDIR has cost so far (other shards' spend
    as of now; the runner takes in theirs at each part commit)."""
    spent = outdir.total_spend()
    stats = Stats(price=job.price, spent=0.0 if spent is None else spent.usd, max_cost=job.max_cost)
    stats.concurrency = stats.concurrency_min = job.concurrency
    stats.total = total
    return stats


def check_input(job: Job, *, stdin: bool) -> InputFiles:
    """The input a run (or the dry run) reads; JobError when it is unusable.

    ``stdin``: this process may read ``-i -`` (a run in one process; shards cannot share
    one pipe). Batch mode reads the input again when it collects answers, maybe in a later
    run, which a pipe cannot give it."""
    if job.input_path == STDIN and (not stdin or job.mode == "batch"):
        what = "--mode batch" if stdin else "--shard or --cluster"
        raise JobError(
            f"input - (stdin) works for an online run in one process only: for {what}, "
            "save it to a file (or object storage) first"
        )
    inputs = open_input(job.input_path, stdin=stdin)
    prompt.check_input(job, inputs)
    return inputs


def check_key(job: Job, options: RunOptions, *, transport: object) -> str | None:
    """The API key the run uses; JobError when a run would need one and has none (or a
    budget without a price to count it in)."""
    key = options.key(job.api_key_env)
    default_url = job.profile.default_base_url
    if not job.simulate and key is None and transport is None and job.base_url == default_url:
        raise JobError(
            f"no API key: set the environment variable {job.api_key_env} "
            "(or rehearse offline with --simulate)"
        )
    if job.max_cost is not None and job.no_price is not None:
        raise JobError(f"limits.max_cost needs a price: {job.no_price}")
    return key


@contextlib.contextmanager
def open_session(
    job: Job, inputs: InputFiles, options: RunOptions
) -> Iterator[tuple[RunSession, pa.Schema]]:
    """Hold the OUTDIR (or one shard of it) for a run: job.json checked and saved, and the
    result schema the run writes."""
    outdir, shard = OutputDir(job.output_dir), options.shard
    fingerprints, request = job.fingerprints(), job.shaping()
    with open_run(outdir, fingerprints, request, force=options.force, shard=shard) as session:
        full = room_error(outdir.storage)  # before the first request, not after paying
        if full is not None:
            raise full
        keep_types = keep_column_types(job, inputs, outdir.committed_result_schema())
        session.save_job(
            job.fingerprint(),
            job.to_json(),
            once=shard is not None,
            request=request,
            keep_types={name: str(kind) for name, kind in keep_types.items()},
        )
        yield session, result_schema(job, keep_types)


def keep_column_types(
    job: Job, inputs: InputFiles, committed: pa.Schema | None
) -> dict[str, pa.DataType]:
    """Keep-column types: fixed by the committed parts that hold the column, else the input's
    schema (a keep column added since the last run is new to the parts)."""
    names = committed.names if committed is not None else []
    fixed = {n: committed.field(n).type for n in job.keep_columns if committed and n in names}
    new = [name for name in job.keep_columns if name not in fixed]
    if not new:
        return fixed
    types = inputs.arrow_types()
    if types:
        return {**fixed, **{name: types[name] for name in new if name in types}}
    first = next((row.data for row in inputs.rows() if row.data is not None), {})
    return {**fixed, **{name: infer_type(first.get(name)) for name in new}}


# --- build ------------------------------------------------------------------------------------


@contextlib.contextmanager
def build(prepared: Prepared, options: RunOptions) -> Iterator[RunContext]:
    """The parts every way of dispatching shares, made once: part writers, the answer journal,
    the budget and the figures, the row pipeline and its Work (the input is read as the
    dispatcher takes it, and closed when the run ends)."""
    job, session = prepared.job, prepared.session
    outdir = session.outdir
    results = session.writer(RESULTS, prepared.schema)
    errors = session.writer(ERRORS, ERROR_SCHEMA)
    # Batch mode keeps its answers in the provider's files and its own ledger: the answer
    # journal and the budget check are the online runner's.
    online = job.mode != "batch"
    journal = session.journal({RESULTS: results, ERRORS: errors}, enabled=job.journal)
    stats = prepared.stats
    budget = Budget(
        max_cost=job.max_cost,
        price=job.price,
        spent=stats.spent or 0.0,
        shared=None if job.max_cost is None else outdir.reservations(session.prefix),
    )
    # An open batch owns its rows until batch mode collects them (or they are cancelled):
    # an online run leaves them alone rather than buy them a second time.
    in_batches = Ledger(outdir.storage).open_ids(job.fingerprint()) if online else IdSet()
    if in_batches:
        prepared.log.warning(
            "%d rows wait in open batches of an earlier batch-mode run, so this run "
            "leaves them: run with --mode batch to collect them, or zbatch cancel",
            len(in_batches),
        )
    # The response cache comes with a run that asks for it: a live run reads and fills it.
    from ..store.cache import open_cache

    cache, cache_problem = open_cache(job.cache, job.cache_path, simulated=job.simulate)
    if cache_problem:
        prepared.log.warning(cache_problem)
    pipeline = RowPipeline(
        job,
        state=session.state,
        stats=stats,
        results=JournaledSink(results, journal, RESULTS) if online else results,
        errors=JournaledSink(errors, journal, ERRORS) if online else errors,
        schema=prepared.schema,
        retry_failed=options.retry_failed,
        in_shard=owned_rows(options.shard, in_batches),
        secret=prepared.api_key or "",
        cache=cache,
    )
    pipeline.warn = prepared.log.warning
    # A first run has no done rows to skip: reading each block's ids ahead would be wasted.
    inputs = prepared.inputs
    done = session.state
    items = inputs.rows_or_done(job.id_column, pipeline.all_done) if done else inputs.rows()
    try:
        yield RunContext(
            job=job,
            pipeline=pipeline,
            works=pipeline.works(items, max_rows=options.max_rows),
            results=results,
            errors=errors,
            log=prepared.log,
            progress=options.progress,
            handle_signals=options.handle_signals,
            journal=journal,
            budget=budget,
            outdir=outdir,
            backoff=Backoff(base=job.backoff_base, cap=job.backoff_cap),
            api_key=prepared.api_key,
        )
    finally:
        items.close()
        if cache is not None:
            cache.close()


def owned_rows(shard: Shard | None, in_batches: IdSet) -> Callable[[str], bool] | None:
    """Whether a row is this run's: in its shard, and in no open batch (None: every row)."""
    if not in_batches:
        return None if shard is None else shard.contains
    if shard is None:
        return lambda row_id: row_id not in in_batches
    return lambda row_id: shard.contains(row_id) and row_id not in in_batches


def _builder(job: Job) -> Build:
    """The way of dispatching the job's mode asks for. Each family is imported here, not with
    the module: the HTTP stack comes with a run (docs/performance.md)."""
    if job.mode == "batch":
        from ..batch.mode import build as build_batch

        return build_batch
    from ..online.runner import build as build_online

    return build_online


def _log_start(prepared: Prepared) -> None:
    job, state = prepared.job, prepared.session.state
    prepared.log.info(
        "start%s: %s, %d rows in input, %d ids settled earlier, model %s, concurrency %d",
        prepared.where,
        job.input_path,
        prepared.input_rows,
        len(state.succeeded) + len(state.latest_error),
        job.effective_model,
        job.concurrency,
        extra={"event": "started"},
    )


# --- finish -----------------------------------------------------------------------------------


def finish(
    prepared: Prepared,
    stats: Stats,
    stopped: ZbatchError | None,
    *,
    summary: Mapping[str, Any] | None,
    report: bool = False,
) -> RunResult:
    """The end of a run (or a shard's, or a cluster's): its result and exit code in the
    figures, its manifest (summary.json, or the shard's) with ``summary`` added (None: no
    manifest), OUTDIR/report.html with ``report`` (never failing the run), the last log
    line."""
    result = RunResult(stats, stopped, prepared.session.notice)
    stats.exit_code = result.exit_code
    ledger = prepared.outdir.total_spend()  # every writer's, settled: what `status` shows
    if ledger is not None:
        stats.spent = ledger.usd
    if summary is not None:
        outdir, tag = prepared.outdir, prepared.info.tag
        manifest = record(prepared.info, {**stats.to_json(), **summary}, last_success(outdir, tag))
        write_manifest(outdir, manifest, tag)
        result.manifest = manifest
    if report:
        from ..results.page import write_run_report  # plotly comes only with a report

        write_run_report(prepared.outdir, prepared.log, input_rows=prepared.input_rows)
    log_end(prepared.log, stats, result.exit_code, prepared.where)
    return result
