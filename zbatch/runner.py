"""The run: rows flow from the input through the limits to the API and into part files.

    input rows ──(next row, shared)──> workers (ceiling) ──> PartWriters ──> flusher
                                         │  AdaptiveLimit (in-flight cap)
                                         │  Pacer (rpm / tpm), Backoff
                                         └─ Client.send → Success | Failure

Each worker takes the next row from the one input reader they share (reading is synchronous,
so two workers are never inside it at once). Stopping (fatal answer, quota, signal, disk
error) sets ``stop_reason``: workers finish the request they have in flight and take no new
row, and everything completed is committed in a shielded flush.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow as pa

from . import prompt, store
from .answers import NotJson, json_field_value, normalize_label, parse_json_object
from .client import Client
from .errors import (
    FatalApiError,
    Interrupted,
    JobError,
    QuotaReached,
    StoreError,
    ZbatchError,
    redact,
)
from .idset import IdSet
from .job import DEFAULT_BASE_URL, Job, json_field_spec
from .limits import AdaptiveLimit, Backoff, Pacer
from .outcome import Failure, Scope, Success
from .pricing import price_for
from .progress import NullProgress, Progress
from .providers import provider_for
from .simulate import SimulatedEndpoint, SimulationSpec
from .source import DoneRows, InputFiles, RawRow, count_rows, open_input
from .stats import Stats

log = logging.getLogger("zbatch")
QUOTA_WAIT_MAX = 3600.0
# Workers start this far apart, so the first requests go out over a few milliseconds rather
# than all at once: a server that caps concurrency answers the first ones with 1302 while the
# rest are still unsent, and the limit is cut before it is hit by the whole ceiling.
WORKER_START_SPACING = 0.0005


@dataclass(frozen=True, slots=True)
class Work:
    """One row ready to send."""

    id: str
    body: bytes
    tokens: int  # estimated prompt + completion tokens, for TPM pacing
    keep: tuple[Any, ...]


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves: its figures and why it stopped, if it did."""

    stats: Stats
    stopped: ZbatchError | None
    notice: str | None = None

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped.exit_code
        return 1 if self.stats.failed else 0


def run_job(
    job: Job,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Progress | None = None,
    retry_failed: bool = False,
    force: bool = False,
) -> RunResult:
    """Run (or resume) a job to the end; raises JobError / LockedError before sending anything."""
    inputs = open_input(job.input_path)
    prompt.check_input(job, inputs)
    api_key = os.environ.get(job.api_key_env) or None
    if job.simulate:
        transport = SimulatedEndpoint(SimulationSpec.from_job(job))
    elif api_key is None and transport is None and job.base_url == DEFAULT_BASE_URL:
        raise JobError(
            f"no API key: set the environment variable {job.api_key_env} "
            "(or rehearse offline with --simulate)"
        )
    outdir = Path(job.output_dir)
    with store.locked(outdir):
        store.tidy(outdir)
        notice = store.prepare(outdir, job, force=force)
        state = store.load_state(outdir)
        keep_types = store.keep_column_types(job, inputs)
        store.save_job(outdir, job, keep_types)
        runner = Runner(
            job,
            inputs=inputs,
            state=state,
            schema=store.result_schema(job, keep_types),
            client=Client(
                base_url=job.base_url,
                api_key=api_key,
                timeout=job.timeout,
                max_connections=job.concurrency,
                provider=provider_for(job.base_url),
                transport=transport,
            ),
            progress=progress or NullProgress(),
            retry_failed=retry_failed,
        )
        handler = logging.FileHandler(outdir / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        try:
            if notice:
                log.warning(notice)
            stopped = anyio.run(runner.run)
            stats = runner.stats
            stats.exit_code = RunResult(stats, stopped).exit_code
            store.write_json(outdir / "summary.json", stats.to_json())
            log.info(
                "end: %s, ok %d, failed %d, skipped %d, requests %d, exit %d",
                stats.outcome,
                stats.ok,
                stats.failed,
                stats.skipped,
                stats.requests,
                stats.exit_code,
            )
        finally:
            log.removeHandler(handler)
            handler.close()
    return RunResult(stats, stopped, notice)


class Runner:
    """Holds the run's parts together; one instance per run."""

    def __init__(
        self,
        job: Job,
        *,
        inputs: InputFiles,
        state: store.ResumeState,
        schema: pa.Schema,
        client: Client,
        progress: Progress,
        retry_failed: bool,
    ) -> None:
        self.job = job
        self.inputs = inputs
        self.state = state
        self.client = client
        self.progress = progress
        self.retry_failed = retry_failed
        self._is_done = functools.partial(state.is_done, retry_failed=retry_failed)
        outdir = Path(job.output_dir)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
        (outdir / "results").mkdir(exist_ok=True)
        (outdir / "errors").mkdir(exist_ok=True)
        self.results = store.PartWriter(outdir / "results", schema, stamp=stamp)
        self.errors = store.PartWriter(outdir / "errors", store.ERROR_SCHEMA, stamp=stamp)
        self.limit = AdaptiveLimit(job.concurrency)
        self.rpm = Pacer(job.rpm) if job.rpm else None
        self.tpm = Pacer(job.tpm) if job.tpm else None
        self.backoff = Backoff(base=job.backoff_base, cap=job.backoff_cap)
        prices = client.provider.prices
        self.stats = Stats(price=price_for(job.effective_model, job.prices, prices))
        self.stats.concurrency = self.stats.concurrency_min = job.concurrency
        self.stop_reason: ZbatchError | None = None
        self._resume_at = 0.0  # monotonic time before which nothing is sent (quota pause)
        self._keep_casts = [store.keep_caster(schema.field(name).type) for name in job.keep_columns]
        self._secret = os.environ.get(job.api_key_env) or ""

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> ZbatchError | None:
        job = self.job
        # anyio primitives belong to the event loop, so they are made here, not in __init__.
        self._stop = anyio.Event()
        self._flush_now = anyio.Event()
        self._flush_lock = anyio.Lock()
        self._work_scope = anyio.CancelScope()
        self.stats.total = count_rows(self.inputs.paths)
        log.info(
            "start: %s, %d rows in input, %d ids settled earlier, model %s, concurrency %d",
            job.input_path,
            self.stats.total,
            len(self.state.succeeded) + len(self.state.latest_error),
            job.effective_model,
            job.concurrency,
        )
        self._items = self.inputs.rows_or_done(job.id_column, self._is_done)
        self._seen = IdSet(capacity=self.stats.total)  # sized once: no growth transients
        try:
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(self._watch_signals)
                helpers.start_soon(self._tick)
                helpers.start_soon(self._flush_timer)
                with self._work_scope:
                    async with anyio.create_task_group() as work:
                        for index in range(job.concurrency):
                            work.start_soon(self._worker, index * WORKER_START_SPACING)
                if not self.stopping:
                    stats = self.stats
                    log.info(
                        "input read: %d rows, %d already done", stats.input_rows, stats.skipped
                    )
                helpers.cancel_scope.cancel()
        finally:
            self._items.close()
            with anyio.CancelScope(shield=True):
                await self.client.aclose()
                try:
                    await self._flush()
                except StoreError as exc:
                    self.stop_reason = exc  # outranks an earlier reason: rows were not saved
                    self.stats.outcome = f"stopped: {exc}{self._forget_unsaved()}"
                self.stats.concurrency = self.limit.current
                self.stats.concurrency_min = self.limit.minimum
                self.progress.close(self.stats)
        if self.stop_reason is None:
            self.stats.outcome = "finished" if not self.stats.failed else "finished with errors"
        return self.stop_reason

    def _forget_unsaved(self) -> str:
        """Take rows that could not be committed out of the counts; say what happens to them."""
        unsaved_ok, unsaved_failed = len(self.results.rows), len(self.errors.rows)
        self.stats.ok -= unsaved_ok
        self.stats.failed -= unsaved_failed
        unsaved = unsaved_ok + unsaved_failed
        if not unsaved:
            return ""
        return f" ({unsaved} finished rows were not saved; the next run sends them again)"

    def stop(self, reason: ZbatchError) -> None:
        """Stop dispatching; the first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stats.outcome = f"stopped: {reason}"
        log.warning("stopping: %s", reason)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    # --- reading the input --------------------------------------------------------------

    async def _next_work(self) -> Work | None:
        """The next row to send; None when the input is used up or the run is stopping.

        Rows that need no request (done before, repeated, unreadable) are dealt with on the
        way; every few hundred of them the event loop gets a turn.
        """
        stats = self.stats
        while not self.stopping:
            try:
                item = next(self._items)
            except StopIteration:
                return None
            except JobError as exc:  # a file broke off part-way: keep what completed, stop
                self.stop(exc)
                return None
            if isinstance(item, DoneRows):
                self._skip_done(item)
                await anyio.lowlevel.checkpoint()
                continue
            stats.input_rows += 1
            work = self._prepare(item)
            if work is not None:
                return work
            if stats.input_rows % 512 == 0:
                await anyio.lowlevel.checkpoint()
        return None

    def _prepare(self, raw: RawRow) -> Work | None:
        """Turn an input row into Work; None when it is done already or cannot be sent.

        Done-ness is checked before rendering: a resume over a million finished rows then
        costs a read of their ids, not a million renders.
        """
        if raw.data is None:
            self._row_error(f"?{raw.where}", "invalid_input", raw.problem or "unreadable row")
            return None
        data = raw.data
        row_id = prompt.row_id(data, self.job.id_column)
        if row_id is None:
            column = self.job.id_column or "id"
            self._row_error(
                f"?{raw.where}", "missing_id", f"{raw.where} has no usable '{column}' value"
            )
            return None
        if not self._seen.add(row_id):
            self._repeated(row_id, raw.where)
            return None
        if self._is_done(row_id):
            self.stats.skipped += 1
            return None
        try:
            body = prompt.render(data, self.job)
        except prompt.RenderError as exc:
            self._row_error(row_id, "template_error", f"{raw.where}: {exc}")
            return None
        tokens = prompt.estimate_tokens(body) + int(body.get("max_tokens") or 0)
        keep = tuple(
            cast(data.get(name))
            for cast, name in zip(self._keep_casts, self.job.keep_columns, strict=True)
        )
        return Work(row_id, json.dumps(body, ensure_ascii=False).encode(), tokens, keep)

    def _skip_done(self, done: DoneRows) -> None:
        """Count rows done before as skipped, still noticing ids that repeat."""
        self.stats.input_rows += len(done.ids)
        for offset, row_id in enumerate(done.ids):
            if self._seen.add(row_id):
                self.stats.skipped += 1
            else:
                self._repeated(row_id, done.where(offset))

    def _repeated(self, row_id: str, where: str) -> None:
        """A row whose id an earlier row had; logged unless an earlier run logged it."""
        if row_id in self.state.duplicates_logged:
            return
        failure = Failure("duplicate_id", Scope.ROW, f"{where} repeats id {row_id!r}")
        self._log_error(row_id, failure, attempts=0)
        self.stats.failed += 1
        self.stats.errors["duplicate_id"] += 1

    def _row_error(self, row_id: str, error_type: str, message: str) -> None:
        if self.state.is_done(row_id, retry_failed=False):
            self.stats.skipped += 1
            return
        self._log_error(row_id, Failure(error_type, Scope.ROW, message), attempts=0)
        self.stats.failed += 1
        self.stats.errors[error_type] += 1

    # --- workers --------------------------------------------------------------------------

    async def _worker(self, start_after: float) -> None:
        if not await self._sleep(start_after):
            return
        while (work := await self._next_work()) is not None:
            await self._process(work)

    async def _process(self, work: Work) -> None:
        """Send one row until it succeeds, fails for good, or the run stops."""
        job, stats = self.job, self.stats
        started = time.monotonic()
        attempts = 0
        answer_retries = 0
        while True:
            async with self.limit.slot() as epoch:
                if not await self._paced(work):
                    return
                stats.requests += 1
                outcome = await self.client.send(work.body)
            attempts += 1
            if isinstance(outcome, Success):
                self.limit.on_success()
                self._count_usage(work, outcome)
                failure = self._accept(work, outcome, attempts)
                if failure is None:
                    return
                if answer_retries < job.label_retries and failure.error_type == "invalid_label":
                    answer_retries += 1
                    stats.retries[failure.error_type] += 1
                    continue
                self._fail(work, failure, attempts)
                return
            failure = outcome
            if failure.scope is Scope.SLOW_DOWN and self.limit.on_reject(epoch):
                log.info(
                    "concurrency %d after a rejection (%s %s)",
                    self.limit.current,
                    failure.status_code,
                    failure.error_code or "",
                )
            if failure.scope is Scope.FATAL:
                self._fail(work, failure, attempts, retryable=True)
                code = failure.error_code or failure.status_code
                hint = self.client.provider.fatal_hint(failure)
                self.stop(FatalApiError(f"{failure.message} ({code}); {hint}"))
                return
            if failure.scope is Scope.QUOTA:
                reset = self.client.provider.quota_reset(failure.message)
                if job.wait_for_quota:
                    self._pause_for_quota(reset)
                    continue
                self._fail(work, failure, attempts, retryable=True)
                when = f"it resets at {reset.isoformat()}" if reset else "wait for the reset"
                self.stop(
                    QuotaReached(
                        f"quota reached: {failure.message}; {when}, then run the same command "
                        "to resume (or use --wait-for-quota)"
                    )
                )
                return
            if failure.scope is Scope.ROW:
                self._fail(work, failure, attempts)
                return
            out_of_time = time.monotonic() - started >= job.max_attempt_seconds
            if attempts > job.max_retries or out_of_time:
                self._fail(work, failure, attempts)
                return
            stats.retries[failure.error_type] += 1
            if not await self._sleep(self.backoff.delay(attempts - 1, failure.retry_after)):
                return

    async def _paced(self, work: Work) -> bool:
        """Wait for the RPM / TPM pacers; False if the run stopped meanwhile."""
        if self.stopping:
            return False
        paused = self._resume_at - time.monotonic()
        if paused > 0 and not await self._sleep(paused):
            return False
        if self.rpm is not None and not await self._sleep(self.rpm.reserve(1)):
            return False
        return self.tpm is None or await self._sleep(self.tpm.reserve(work.tokens))

    def _pause_for_quota(self, reset: dt.datetime | None) -> None:
        """--wait-for-quota: hold every dispatch until the reset, or an hour, whichever first."""
        if self._resume_at > time.monotonic():
            return
        wait = QUOTA_WAIT_MAX
        if reset is not None:
            wait = min(wait, max(1.0, (reset - dt.datetime.now(dt.UTC)).total_seconds()))
        self._resume_at = time.monotonic() + wait
        log.warning("quota reached: pausing all requests for %.0f s (--wait-for-quota)", wait)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the run stops first; True if it is still running."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stop.wait()
        return not self.stopping

    def _count_usage(self, work: Work, answer: Success) -> None:
        stats = self.stats
        stats.prompt_tokens += answer.prompt_tokens or 0
        stats.completion_tokens += answer.completion_tokens or 0
        stats.cached_tokens += answer.cached_tokens or 0
        if self.tpm is not None and answer.total_tokens is not None:
            self.tpm.adjust(answer.total_tokens - work.tokens)

    def _accept(self, work: Work, answer: Success, attempts: int) -> Failure | None:
        """Check the answer against labels / JSON and commit it; a Failure if it does not fit."""
        job = self.job
        extra: list[Any] = []
        if job.choices:
            label = normalize_label(answer.content, job.choices)
            if label is None:
                shown = redact(answer.content[:80])
                return Failure(
                    "invalid_label", Scope.ROW, f"answer {shown!r} is not one of the choices"
                )
            extra.append(label)
        if job.response_format == "json_object":
            try:
                obj = parse_json_object(answer.content)
            except NotJson as exc:
                return Failure("invalid_json", Scope.ROW, str(exc))
            extra.append(json.dumps(obj, ensure_ascii=False))
            for spec in job.json_fields:
                name, kind = json_field_spec(spec)
                extra.append(json_field_value(obj.get(name), kind))
        if answer.finish_reason in ("length", "model_context_window_exceeded"):
            self.stats.truncated += 1
        self.results.add(store.result_row(work.id, answer, attempts, [*extra, *work.keep]))
        self.stats.ok += 1
        if job.choices:
            self.stats.labels[extra[0]] += 1
        self._maybe_flush(self.results)
        return None

    def _fail(
        self, work: Work, failure: Failure, attempts: int, *, retryable: bool | None = None
    ) -> None:
        self._log_error(work.id, failure, attempts, retryable=retryable)
        if retryable and failure.scope in (Scope.FATAL, Scope.QUOTA):
            return  # not the row's fault: it stays pending
        self.stats.failed += 1
        self.stats.errors[failure.error_type] += 1

    def _log_error(
        self, row_id: str, failure: Failure, attempts: int, *, retryable: bool | None = None
    ) -> None:
        retryable = failure.retryable if retryable is None else retryable
        message = redact(failure.message, self._secret)
        self.errors.add(store.error_row(row_id, failure, attempts, retryable, message))
        self._maybe_flush(self.errors)

    # --- committing -----------------------------------------------------------------------

    def _maybe_flush(self, writer: store.PartWriter) -> None:
        if len(writer.rows) >= self.job.part_rows:
            self._flush_now.set()

    async def _flush_timer(self) -> None:
        while True:
            with anyio.move_on_after(self.job.part_seconds):
                await self._flush_now.wait()
            self._flush_now = anyio.Event()
            try:
                await self._flush()
            except StoreError as exc:
                self.stop(exc)
                self._work_scope.cancel()
                return

    async def _flush(self) -> None:
        """Commit both buffers as part files, shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            async with self._flush_lock:
                for writer in (self.results, self.errors):
                    rows = writer.take()
                    try:
                        await anyio.to_thread.run_sync(writer.commit, rows)
                    except StoreError:
                        writer.rows[:0] = rows  # keep them for the final attempt
                        raise

    # --- signals and progress -------------------------------------------------------------

    async def _watch_signals(self) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        except (NotImplementedError, ValueError):  # not the main thread
            return
        with receiver as signals:
            async for signum in signals:
                code = 130 if signum == signal.SIGINT else 143
                if self.stopping and isinstance(self.stop_reason, Interrupted):
                    log.warning("second signal: exiting at once")
                    os._exit(code)
                name = signal.Signals(signum).name
                self.stop(
                    Interrupted(
                        f"interrupted by {name}; run the same command to resume", exit_code=code
                    )
                )
                self._grace_deadline(self.job.grace_seconds)

    def _grace_deadline(self, seconds: float) -> None:
        """Give in-flight requests ``seconds`` to finish, then cancel them."""
        self._work_scope.deadline = min(self._work_scope.deadline, anyio.current_time() + seconds)

    async def _tick(self) -> None:
        while True:
            self.stats.concurrency = self.limit.current
            self.stats.concurrency_min = self.limit.minimum
            self.progress.refresh(self.stats)
            await anyio.sleep(self.progress.interval)
