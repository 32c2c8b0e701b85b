"""One run of a job (or of one shard of it), wired up: the input checked, the OUTDIR held,
the pipeline and a dispatcher (the online runner or batch mode), the summary written.

:mod:`zbatch.api` is the public face; :func:`execute` is what ``arun`` and a cluster's shard
tasks call.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .. import prompt
from ..batch.ledger import Ledger
from ..budget import Budget
from ..errors import JobError, ZbatchError
from ..idset import IdSet
from ..job.settings import Job
from ..ops.events import RunContext
from ..ops.manifest import RunInfo, last_success, record
from ..ops.manifest import write as write_manifest
from ..pipeline import RowPipeline
from ..progress import NullProgress, Progress
from ..schema import ERROR_SCHEMA, infer_type, result_schema
from ..shard import Shard
from ..source import STDIN, InputFiles, count_rows, open_input
from ..stats import Stats
from ..store import ERRORS, RESULTS, OutputDir, RunSession, room_error
from ..store.state import RetryFailed
from .runlog import log_end, run_log

if TYPE_CHECKING:
    import httpx

    from ..limits import AdaptiveLimit


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


def check_run(
    job: Job,
    api_key: str | None,
    transport: httpx.AsyncBaseTransport | None,
    *,
    stdin: bool = False,
) -> tuple[InputFiles, str | None]:
    """The input and the API key a run would use; JobError when either is unusable.

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
    key = api_key if api_key is not None else os.environ.get(job.api_key_env) or None
    default_url = job.profile.default_base_url
    if not job.simulate and key is None and transport is None and job.base_url == default_url:
        raise JobError(
            f"no API key: set the environment variable {job.api_key_env} "
            "(or rehearse offline with --simulate)"
        )
    if job.max_cost is not None and job.no_price is not None:
        raise JobError(f"limits.max_cost needs a price: {job.no_price}")
    return inputs, key


@contextlib.contextmanager
def open_session(
    job: Job, inputs: InputFiles, *, force: bool, shard: Shard | None
) -> Iterator[tuple[RunSession, pa.Schema]]:
    """Hold the OUTDIR (or one shard of it) for a run: job.json checked and saved, and the
    result schema the run writes."""
    outdir = OutputDir(job.output_dir)
    with outdir.open_run(job.fingerprints(), job.shaping(), force=force, shard=shard) as session:
        full = room_error(outdir.storage)  # before the first request, not after paying
        if full is not None:
            raise full
        keep_types = keep_column_types(job, inputs, outdir.committed_result_schema())
        session.save_job(
            job.fingerprint(),
            job.to_json(),
            once=shard is not None,
            request=job.shaping(),
            keep_types={name: str(kind) for name, kind in keep_types.items()},
        )
        yield session, result_schema(job, keep_types)


async def execute(
    job: Job,
    *,
    api_key: str | None = None,
    progress: Progress | None = None,
    handle_signals: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_failed: RetryFailed = False,
    force: bool = False,
    limit: int | None = None,
    shard: Shard | None = None,
    in_flight: AdaptiveLimit | None = None,
    stop_when: Callable[[], Awaitable[ZbatchError]] | None = None,
    write_summary: bool = True,
    wait: bool = True,
) -> RunResult:
    """:func:`arun` for the whole job or one shard, with what a cluster task changes: a
    cluster-wide ``in_flight`` limit, a ``stop_when`` from the driver, and no summary of
    its own."""
    # The HTTP stack is imported here, not with the module: `zbatch status` and the other
    # commands that only read an OUTDIR then start without it (docs/performance.md).
    from ..batch.api import BatchApi
    from ..batch.mode import BatchMode
    from ..batch.simulate import SimulatedBatchApi
    from ..cache import open_cache
    from ..client import Client
    from ..limits import Backoff
    from ..online.runner import Runner
    from ..simulate import SimulatedEndpoint, SimulationSpec
    from ..store.journal import JournaledSink

    # Another run holding these ids is refused at once (exit 75), before the input is read.
    with OutputDir(job.output_dir).locked(None if shard is None else (shard.index, shard.count)):
        pass
    inputs, key = check_run(job, api_key, transport, stdin=shard is None)
    provider = job.profile
    if job.simulate and job.mode == "batch":
        transport = SimulatedBatchApi(job)
    elif job.simulate:
        transport = SimulatedEndpoint(SimulationSpec.from_job(job))
    with open_session(job, inputs, force=force, shard=shard) as (session, schema):
        outdir = session.outdir
        results = session.writer(RESULTS, schema)
        errors = session.writer(ERRORS, ERROR_SCHEMA)
        price = job.price
        # Batch mode keeps its answers in the provider's files and its own ledger: the answer
        # journal and the budget check are the online runner's.
        online = job.mode != "batch"
        journal = session.journal({RESULTS: results, ERRORS: errors}, enabled=job.journal)
        # Other shards' spend counts as of now; the runner takes in theirs at each part commit.
        spent = outdir.total_spend()
        budget = Budget(
            limit=job.max_cost,
            price=price,
            spent=0.0 if spent is None else spent.usd,
            shared=None if job.max_cost is None else outdir.reservations(session.prefix),
        )
        stats = Stats(price=price, spent=budget.spent, max_cost=job.max_cost)
        stats.concurrency = stats.concurrency_min = job.concurrency
        # A shard's rows are known only once its part of the input has been read.
        input_rows = count_rows(inputs.paths)  # reads a JSONL or CSV input to the end
        stats.total = input_rows if shard is None else None
        state = session.state
        # An open batch owns its rows until batch mode collects them (or they are cancelled):
        # an online run leaves them alone rather than buy them a second time.
        in_batches = Ledger(outdir.storage).open_ids(job.fingerprint()) if online else IdSet()
        cache, cache_problem = open_cache(job.cache, job.cache_path, simulated=job.simulate)
        pipeline = RowPipeline(
            job,
            state=state,
            stats=stats,
            results=JournaledSink(results, journal, RESULTS) if online else results,
            errors=JournaledSink(errors, journal, ERRORS) if online else errors,
            schema=schema,
            retry_failed=retry_failed,
            in_shard=owned_rows(shard, in_batches),
            secret=key or "",
            cache=cache,
        )
        items = inputs.rows_or_done(job.id_column, pipeline.is_done)
        where = "" if shard is None else f" shard {shard}"
        info = RunInfo.begin(
            session.prefix,
            shard=None if shard is None else str(shard),
            tag=session.tag,
            job_fingerprint=job.fingerprint(),
            paths=inputs.paths,
        )
        context = RunContext(session.prefix, "all" if shard is None else str(shard), lambda: stats)
        with run_log(outdir, job.log_format, context) as log:
            pipeline.warn = log.warning
            if cache_problem:
                log.warning(cache_problem)
            if session.notice:
                log.warning(session.notice)
            if in_batches:
                log.warning(
                    "%d rows wait in open batches of an earlier batch-mode run, so this run "
                    "leaves them: run with --mode batch to collect them, or zbatch cancel",
                    len(in_batches),
                )
            if session.replayed:
                log.warning(
                    "replayed %d answers from the journal of a run that was cut off",
                    session.replayed,
                )
            log.info(
                "start%s: %s, %d rows in input, %d ids settled earlier, model %s, concurrency %d",
                where,
                job.input_path,
                input_rows,
                len(state.succeeded) + len(state.latest_error),
                job.effective_model,
                job.concurrency,
                extra={"event": "started"},
            )
            runner: Runner | BatchMode
            if job.mode == "batch":
                runner = BatchMode(
                    job,
                    pipeline=pipeline,
                    works=pipeline.works(items, limit=limit),
                    results=results,
                    errors=errors,
                    api=BatchApi(
                        provider,
                        base_url=job.base_url,
                        api_key=key,
                        timeout=job.timeout,
                        max_retries=job.max_retries,
                        backoff=Backoff(base=job.backoff_base, cap=job.backoff_cap),
                        transport=transport,
                    ),
                    storage=outdir.storage,
                    budget=budget,
                    record_spend=lambda spend, name: outdir.add_spend(spend, name, "batch"),
                    progress=progress or NullProgress(),
                    log=log,
                    handle_signals=handle_signals,
                    wait=wait,
                )
            else:
                client = Client(
                    base_url=job.base_url,
                    api_key=key,
                    timeout=job.timeout,
                    max_connections=job.concurrency,
                    provider=provider,
                    transport=transport,
                )
                runner = Runner(
                    job,
                    pipeline=pipeline,
                    works=pipeline.works(items, limit=limit),
                    results=results,
                    errors=errors,
                    journal=journal,
                    budget=budget,
                    client=client,
                    progress=progress or NullProgress(),
                    log=log,
                    handle_signals=handle_signals,
                    limit=in_flight,
                    stop_when=stop_when,
                )
            try:
                stopped = await runner.run()
            finally:
                items.close()
                if cache is not None:
                    cache.close()
            if shard is not None and stopped is None:
                stats.total = stats.input_rows
            also: dict[str, Any] | None = {} if write_summary else None
            return finish(
                outdir,
                log,
                stats,
                stopped,
                session.notice,
                summary=also,
                info=info,
                where=where,
                report=job.report and shard is None and write_summary,
            )


def owned_rows(shard: Shard | None, in_batches: IdSet) -> Callable[[str], bool] | None:
    """Whether a row is this run's: in its shard, and in no open batch (None: every row)."""
    if not in_batches:
        return None if shard is None else shard.contains
    if shard is None:
        return lambda row_id: row_id not in in_batches
    return lambda row_id: shard.contains(row_id) and row_id not in in_batches


def finish(
    outdir: OutputDir,
    log: logging.Logger,
    stats: Stats,
    stopped: ZbatchError | None,
    notice: str | None,
    *,
    summary: Mapping[str, Any] | None,
    info: RunInfo,
    where: str = "",
    report: bool = False,
) -> RunResult:
    """The end of a run (or a shard's, or a cluster's): its result and exit code in the
    figures, its manifest (summary.json, or the shard's) with ``summary`` added (None: no
    manifest), OUTDIR/report.html
    with ``report`` (never failing the run), the last log line."""
    result = RunResult(stats, stopped, notice)
    stats.exit_code = result.exit_code
    ledger = outdir.total_spend()  # every writer's, settled: what `status` shows
    if ledger is not None:
        stats.spent = ledger.usd
    if summary is not None:
        figures = {**stats.to_json(), **summary}
        manifest = record(info, figures, last_success(outdir, info.tag))
        write_manifest(outdir, manifest, info.tag)
        result.manifest = manifest
    if report:
        from ..results.page import write_run_report

        write_run_report(outdir, log)
    log_end(log, stats, result.exit_code, where)
    return result


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
