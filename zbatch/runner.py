"""The online scheduler: rows flow from the pipeline through the limits to the API.

    pipeline.works() ──(next row, shared)──> workers (ceiling) ──> part writers ──> flusher
                                               │  AdaptiveLimit (in-flight cap)
                                               │  Pacer (rpm / tpm), Backoff
                                               └─ Client.send → Success | Failure

Each worker takes the next Work from the one pipeline they share (reading is synchronous,
so two workers are never inside it at once). Stopping (fatal answer, quota, budget, a dead
endpoint, signal, disk error) sets ``stop_reason``: workers finish the request they have in
flight and take no new row, and everything completed is committed in a shielded flush.

Unattended runs (docs/performance.md, README "Unattended runs"): every billed answer is
charged to the :class:`~zbatch.budget.Budget` and the journal; a request goes out only if its
worst case fits the budget; :mod:`zbatch.health` says when the endpoint is down or the first
rows show the job itself is wrong; once the input is used up, an attempt stuck far beyond the
usual latency is hedged on a second connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import anyio

from .budget import Budget, Spend
from .client import Client
from .dedupe import SharedAnswers, deterministic
from .errors import (
    BudgetSpent,
    EndpointDown,
    FatalApiError,
    Interrupted,
    JobError,
    QuotaReached,
    StoreError,
    ZbatchError,
)
from .health import DownDetector, FirstRows, Held
from .hedge import Hedger
from .job import Job
from .limits import AdaptiveLimit, Backoff, Pacer, QuotaPause
from .outcome import Failure, Scope, Success
from .pipeline import RowPipeline, Work, commit
from .progress import Progress
from .schema import ERROR_SCHEMA
from .store import PartWriter, room_error
from .store.journal import Journal

# Answers that do not fit the job are asked again (labels.retries times): a model's next
# answer to the same request often does.
RE_ASKED = ("invalid_label", "invalid_json")
# Workers start this far apart, so the first requests go out over a few milliseconds rather
# than all at once: a server that caps concurrency answers the first ones with 1302 while the
# rest are still unsent, and the limit is cut before it is hit by the whole ceiling.
WORKER_START_SPACING = 0.0005
# The first rows of a run that decide whether every request fails the same way.
FIRST_ROWS = 20
ANSWER = ERROR_SCHEMA.names.index("answer")  # an error row's paid answer, if it kept one


class Runner:
    """Sends a job's Work with bounded, adaptive concurrency; one instance per run."""

    def __init__(
        self,
        job: Job,
        *,
        pipeline: RowPipeline,
        works: Iterator[Work | None],
        results: PartWriter,
        errors: PartWriter,
        journal: Journal,
        budget: Budget,
        client: Client,
        progress: Progress,
        log: logging.Logger,
        handle_signals: bool = False,
        limit: AdaptiveLimit | None = None,
        stop_when: Callable[[], Awaitable[ZbatchError]] | None = None,
    ) -> None:
        """``limit`` replaces the run's own in-flight limit (a cluster-wide one);
        ``stop_when`` returns when someone else asks the run to stop (a cluster's driver),
        which then stops like on a signal."""
        self.job = job
        self.pipeline = pipeline
        self.stats = pipeline.stats
        self.client = client
        self.progress = progress
        self.log = log
        self._works = works
        self._writers = (results, errors)
        self.journal = journal
        self.budget = budget
        self.down = DownDetector(job.down_after)
        self.first_rows = FirstRows(FIRST_ROWS)
        pipeline.on_added = self.buffers_changed
        self._handle_signals = handle_signals
        self._stop_when = stop_when
        self.limit = limit or AdaptiveLimit(job.concurrency)
        self.hedger = Hedger(client, self.limit, self.stats)
        self.rpm = Pacer(job.rpm) if job.rpm else None
        self.tpm = Pacer(job.tpm) if job.tpm else None
        self.backoff = Backoff(base=job.backoff_base, cap=job.backoff_cap)
        self.quota = QuotaPause(patience=job.quota_wait_seconds)
        self.shared = SharedAnswers(pipeline) if job.dedupe and deterministic(job) else None
        self.stop_reason: ZbatchError | None = None
        self._resume_at = 0.0  # monotonic time before which nothing is sent (quota pause)
        self._probe: anyio.Event | None = None  # set when the one request of a quota stretch ends
        # anyio primitives are made where they are used: they belong to the running loop.
        self._stop = anyio.Event()
        self._flush_now = anyio.Event()
        self._flush_lock = anyio.Lock()
        self._work_scope = anyio.CancelScope()
        self._input_done = anyio.Event()

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> ZbatchError | None:
        try:
            async with anyio.create_task_group() as helpers:
                if self._handle_signals:
                    helpers.start_soon(self._watch_signals)
                if self._stop_when is not None:
                    helpers.start_soon(self._watch_requests, self._stop_when)
                helpers.start_soon(self._tick)
                helpers.start_soon(self._flush_timer)
                helpers.start_soon(self._group_commit)
                if self.job.hedge:
                    helpers.start_soon(self.hedger.run, self._input_done, helpers, self._stopped)
                with self._work_scope:
                    async with anyio.create_task_group() as work:
                        for index in range(self.job.concurrency):
                            work.start_soon(self._worker, index * WORKER_START_SPACING)
                if not self.stopping:
                    stats = self.stats
                    self.log.info(
                        "input read: %d rows, %d already done", stats.input_rows, stats.skipped
                    )
                helpers.cancel_scope.cancel()
        finally:
            self._release_first_rows()
            with anyio.CancelScope(shield=True):
                await self.client.aclose()
                try:
                    await self._flush()
                except StoreError as exc:
                    # Outranks an earlier reason: rows were not saved, and the message says so.
                    self.stop_reason = StoreError(f"{exc}{self._forget_unsaved()}")
                    self.stats.outcome = f"stopped: {self.stop_reason}"
                self.stats.concurrency = self.limit.current
                self.stats.concurrency_min = self.limit.minimum
                self.stats.spent = self.budget.spent
                self.journal.close()
                self.progress.close(self.stats)
        if isinstance(self.stop_reason, BudgetSpent):  # say what in-flight answers added
            self.stop_reason = BudgetSpent(self.budget.message())
            self.stats.outcome = f"stopped: {self.stop_reason}"
        if self.stop_reason is None:
            self.stats.outcome = "finished" if not self.stats.failed else "finished with errors"
        return self.stop_reason

    def _forget_unsaved(self) -> str:
        """Take rows that could not be committed out of the counts; say what happens to them."""
        results, errors = self._writers
        self.stats.ok -= len(results.rows)
        self.stats.failed -= len(errors.rows)
        paid = len(results.rows) + sum(row[ANSWER] is not None for row in errors.rows)
        unsaved = len(results.rows) + len(errors.rows)
        if not unsaved:
            return ""
        return (
            f" ({paid} paid answers wait to be saved, of {unsaved} finished rows not saved; "
            "the next run sends them again)"
        )

    def stop(self, reason: ZbatchError) -> None:
        """Stop dispatching; the first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stats.outcome = f"stopped: {reason}"
        self.log.warning("stopping: %s", reason)
        self._stop.set()
        self._end_probe()

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def _stopped(self) -> bool:
        return self.stopping

    # --- workers --------------------------------------------------------------------------

    async def _next_work(self) -> Work | None:
        """The next row to send; None when the input is used up or the run is stopping."""
        while not self.stopping:
            try:
                work = next(self._works)
            except StopIteration:
                self._input_done.set()
                return None
            except JobError as exc:  # a file broke off part-way: keep what completed, stop
                self.stop(exc)
                return None
            if work is not None:
                return work
            await anyio.lowlevel.checkpoint()
        return None

    async def _worker(self, start_after: float) -> None:
        if not await self._sleep(start_after):
            return
        while (work := await self._next_work()) is not None:
            if self.shared is not None and await self.shared.reuse(work):
                continue
            await self._process(work)
            if self.shared is not None:
                self.shared.settle(work)

    async def _process(self, work: Work) -> None:
        """Send one row until it succeeds, fails for good, or the run stops."""
        job, stats, pipeline = self.job, self.stats, self.pipeline
        started = time.monotonic()
        attempts = 0
        answer_retries = 0
        while True:
            async with self.limit.slot() as epoch:
                if not await self._paced(work):
                    return
                reservation = self._admit(work)
                if reservation is None:
                    return
                stats.requests += 1
                try:
                    outcome, twin = await self.hedger.send(work)
                finally:
                    self.budget.release(reservation)
            if isinstance(outcome, Success):
                self._bill(outcome)
            if twin is not None:
                self._bill(twin)
            # The requests waiting for this answer run at the next checkpoint, by when a quota
            # answer below has set the next pause.
            self._end_probe()
            attempts += 1
            if isinstance(outcome, Success):
                self.limit.on_success()
                self.quota.clear()
                self.down.alive()
                if self.tpm is not None and outcome.total_tokens is not None:
                    self.tpm.adjust(outcome.total_tokens - work.tokens)
                if self.shared is not None:
                    self.shared.resolve(work, outcome)
                failure = pipeline.accept(work, outcome, attempts)
                if failure is None:
                    self._release_first_rows()
                    return
                if answer_retries < job.label_retries and failure.error_type in RE_ASKED:
                    answer_retries += 1
                    stats.retries[failure.error_type] += 1
                    continue
                self._row_failed(Held(work.id, failure, attempts, outcome.content))
                return
            failure = outcome
            self._observe(failure)
            if failure.scope is Scope.SLOW_DOWN and self.limit.on_reject(epoch):
                self.log.info(
                    "concurrency %d after a rejection (%s %s)",
                    self.limit.current,
                    failure.status_code,
                    failure.error_code or "",
                )
            if failure.scope is Scope.FATAL:
                pipeline.fail(work.id, failure, attempts, retryable=True)
                code = failure.error_code or failure.status_code
                hint = self.client.provider.fatal_hint(failure)
                self.stop(FatalApiError(f"{failure.message} ({code}); {hint}"))
                return
            if failure.scope is Scope.QUOTA:
                if not self._on_quota(work, failure, attempts):
                    return
                continue
            if failure.scope is Scope.ROW:
                self._row_failed(Held(work.id, failure, attempts, None))
                return
            remaining = job.max_attempt_seconds - (time.monotonic() - started)
            delay = self.backoff.delay(attempts - 1, failure.retry_after, remaining=remaining)
            # A wait cut to the deadline (a Retry-After past it) leaves no time for a retry.
            if attempts > job.max_retries or delay >= remaining:
                self._release_first_rows()
                pipeline.fail(work.id, failure, attempts)
                return
            stats.retries[failure.error_type] += 1
            if not await self._sleep(delay):
                return

    # --- unattended: budget, billing, health, hedging -------------------------------------

    def _admit(self, work: Work) -> float | None:
        """Reserve the request's worst case in the budget, or stop the run (exit 5)."""
        prompt_tokens = work.tokens - work.answer_tokens
        reservation = self.budget.admit(prompt_tokens, work.answer_tokens)
        if reservation is None:
            self.stop(BudgetSpent(self.budget.message()))
        return reservation

    def _bill(self, answer: Success) -> None:
        """Every answer is paid for, whatever becomes of it: stats, budget, journal."""
        self.pipeline.count_usage(answer)
        spend = Spend.of(self.budget.price, answer)
        self.budget.charge(spend)
        self.journal.charge(spend)

    def _observe(self, failure: Failure) -> None:
        """A failed attempt: is the endpoint down?"""
        self.down.observe(failure)
        self._check_down()

    def _check_down(self) -> None:
        down_for, last = self.down.down_for, self.down.last_failure
        if down_for is None or last is None or self.stopping:
            return
        status = f" {last.status_code}" if last.status_code else ""
        self.stop(
            EndpointDown(
                f"the endpoint {self.job.base_url} answered nothing but connection, timeout or "
                f"5xx failures for {down_for:.0f} s (limits.down_after = "
                f"{self.job.down_after:g}); last error: {last.error_type}{status}: "
                f"{last.message}. Check that it is up (and base_url, network, proxy), then run "
                "the same command to resume"
            )
        )
        # A down endpoint will not answer what is in flight: give it the grace period only.
        self._grace_deadline(self.job.grace_seconds)

    def _row_failed(self, held: Held) -> None:
        """Log a row's failure, unless the first rows are still deciding whether the job
        itself is wrong (then it is held, and on that verdict logged as not its fault)."""
        first = self.first_rows
        if not first.take(held):
            self._release_first_rows()
            self.pipeline.fail(held.row_id, held.failure, held.attempts, answer=held.answer)
            return
        if first.verdict is None:
            return
        for row in first.release() or [held]:
            failure = replace(row.failure, scope=Scope.FATAL)
            self.pipeline.fail(row.row_id, failure, row.attempts, retryable=True, answer=row.answer)
        self.stop(FatalApiError(first.verdict))

    def _release_first_rows(self) -> None:
        if self.first_rows.deciding:
            for row in self.first_rows.release():
                self.pipeline.fail(row.row_id, row.failure, row.attempts, answer=row.answer)

    def _on_quota(self, work: Work, failure: Failure, attempts: int) -> bool:
        """A quota answer: pause everything (--wait-for-quota; True: try again) or stop."""
        reset = self.client.provider.quota_reset(failure.message)
        if self.job.wait_for_quota and self._pause_for_quota(reset):
            return True
        self.pipeline.fail(work.id, failure, attempts, retryable=True)
        self.stop(QuotaReached(f"quota reached: {failure.message}; {self._quota_advice(reset)}"))
        return False

    def _quota_advice(self, reset: dt.datetime | None) -> str:
        if not self.job.wait_for_quota:
            when = f"it resets at {reset.isoformat()}" if reset else "wait for the reset"
            return f"{when}, then run the same command to resume (or use --wait-for-quota)"
        most = (
            f"--wait-for-quota waits (limits.quota_wait_seconds = {self.job.quota_wait_seconds:g})"
        )
        if reset is not None and reset > dt.datetime.now(dt.UTC):
            when = f"it resets at {reset.isoformat()}, later than {most}"
            return f"{when}; run the same command then to resume"
        return f"not back within what {most}; run the same command later to resume"

    async def _paced(self, work: Work) -> bool:
        """Wait out a quota pause and the RPM / TPM pacers; False if the run stopped meanwhile."""
        while not self.stopping:
            paused = self._resume_at - time.monotonic()
            if paused > 0:
                await self._sleep(paused)
            elif self._probe is not None:
                await self._probe.wait()
            else:
                break
        if self.stopping:
            return False
        if self.quota.exhausted:  # one request at a time finds out whether the quota is back
            self._probe = anyio.Event()
        if self.rpm is not None and not await self._sleep(self.rpm.reserve(1)):
            return False
        return self.tpm is None or await self._sleep(self.tpm.reserve(work.tokens))

    def _pause_for_quota(self, reset: dt.datetime | None) -> bool:
        """--wait-for-quota: hold every dispatch as long as QuotaPause says; False: stop."""
        if self._resume_at > time.monotonic():
            return True  # another worker's quota answer has paused the run already
        wait = self.quota.pause(reset)
        if wait is None:
            return False
        self._resume_at = time.monotonic() + wait
        self.log.warning("quota reached: pausing all requests for %.0f s (--wait-for-quota)", wait)
        return True

    def _end_probe(self) -> None:
        if self._probe is not None:
            self._probe.set()
            self._probe = None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the run stops first; True if it is still running."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stop.wait()
        return not self.stopping

    # --- committing -----------------------------------------------------------------------

    def buffers_changed(self) -> None:
        """The pipeline added a row: commit early once a buffer holds a part's worth."""
        results, errors = self._writers  # called per row: no generator
        if max(len(results.rows), len(errors.rows)) >= self.job.part_rows:
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
            results = self._writers[0]
            # Stop buying answers the disk could not hold: the next part needs about as
            # much room as the last one took.
            full = room_error(results.storage, results.last_part_bytes)
            if full is not None:
                self.stop(full)

    async def _flush(self) -> None:
        """Commit the buffers as parts; the journal's sealed segments then go."""
        async with self._flush_lock:
            unwritten = self.journal.seal()
            try:
                await commit(self.pipeline, *self._writers)
            except StoreError:
                await self.journal.keep(unwritten)  # the rows wait in memory: journal them
                raise
            await self.journal.settle()
            # Shards running at once spend from one budget: take in what the others spent.
            self.budget.spent = await self.journal.spent()

    async def _group_commit(self) -> None:
        try:
            await self.journal.run()
        except StoreError as exc:
            self.stop(exc)
            self._work_scope.cancel()

    # --- signals and progress -------------------------------------------------------------

    async def _watch_signals(self) -> None:
        """SIGINT/SIGTERM stop the run (the CLI asks for this; a library caller need not)."""
        await watch_signals(self._interrupt, self._interrupted, self.log)

    def _interrupted(self) -> bool:
        return isinstance(self.stop_reason, Interrupted)

    def _interrupt(self, code: int, name: str) -> None:
        message = (
            f"interrupted by {name}; finished rows are saved in {self.job.output_dir}: "
            "run the same command to resume"
        )
        self.stop(Interrupted(message, exit_code=code))
        self._grace_deadline(self.job.grace_seconds)

    async def _watch_requests(self, stop_when: Callable[[], Awaitable[ZbatchError]]) -> None:
        self.stop(await stop_when())
        self._grace_deadline(self.job.grace_seconds)

    def _grace_deadline(self, seconds: float) -> None:
        """Give in-flight requests ``seconds`` to finish, then cancel them."""
        self._work_scope.deadline = min(self._work_scope.deadline, anyio.current_time() + seconds)

    async def _tick(self) -> None:
        while True:
            self._check_down()  # also while every attempt hangs
            self.stats.concurrency = self.limit.current
            self.stats.concurrency_min = self.limit.minimum
            self.progress.refresh(self.stats)
            await anyio.sleep(self.progress.interval)


async def watch_signals(
    on_signal: Callable[[int, str], None], interrupted: Callable[[], bool], log: logging.Logger
) -> None:
    """Call ``on_signal(exit code, signal name)`` on SIGINT (130) / SIGTERM (143); once
    ``interrupted()``, a second signal exits at once. Shared by every dispatcher."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    except (NotImplementedError, ValueError):  # not the main thread
        return
    with receiver as signals:
        async for signum in signals:
            code = 130 if signum == signal.SIGINT else 143
            if interrupted():
                log.warning("second signal: exiting at once")
                os._exit(code)
            on_signal(code, signal.Signals(signum).name)
