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
worst case fits the budget; :mod:`zbatch.online.health` says when the endpoint is down or the first
rows show the job itself is wrong; once the input is used up, an attempt stuck far beyond the
usual latency is hedged on a second connection.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from ..client import Client
from ..dispatch import Dispatcher, RunContext
from ..errors import BudgetSpent, FatalApiError, JobError, ZbatchError
from ..execution.options import RunOptions
from ..limits import AdaptiveLimit, Backoff, Pacer
from ..outcome import Failure, Scope, Success
from ..pipeline import Work
from ..simulate import SimulatedEndpoint, SimulationSpec
from .committer import Committer
from .dedupe import SharedAnswers, deterministic
from .guards import Guards
from .health import Held
from .hedge import Hedger
from .quota import QuotaGate

# Workers start this far apart, so the first requests go out over a few milliseconds rather
# than all at once: a server that caps concurrency answers the first ones with 1302 while the
# rest are still unsent, and the limit holds before it is hit by the whole ceiling. The whole
# ramp lasts at most WORKER_RAMP: at --concurrency 1024, 0.5 ms apart would hold the last
# worker back half a second, a round trip of a 500 ms endpoint (2.5 % of a 20-round run).
WORKER_START_SPACING = 0.0005
WORKER_RAMP = 0.05
# A concurrency rejection (429 / 1302) costs nothing and, unless the limiter found a cap (then
# it holds the in-flight under it), says nothing about when to try again: it is retried after
# uniform(0, min(REJECTION_CAP, REJECTION_BASE * 2**n)) s (backoff_base / backoff_cap if
# smaller), n counting the row's rejections, until the row's max_attempt_seconds (max_retries
# counts the other failures: at 30 % rejected, 8 retries would lose one row in 50,000). The
# in-flight limit, not the backoff, bounds how fast requests go out. bench/limits.py --storm
# and the simulation in docs/performance.md set the values: a longer cap is a long tail.
REJECTION_BASE = 0.05
REJECTION_CAP = 0.5


class Runner(Dispatcher):
    """Sends a job's Work with bounded, adaptive concurrency; one instance per run."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        client: Client,
        in_flight: AdaptiveLimit | None = None,
        stop_when: Callable[[], Awaitable[ZbatchError]] | None = None,
    ) -> None:
        """``in_flight`` replaces the run's own adaptive in-flight limit (a cluster-wide one);
        ``stop_when`` returns when someone else asks the run to stop (a cluster's driver),
        which then stops like on a signal."""
        super().__init__(ctx)
        job, pipeline, budget, journal = ctx.job, ctx.pipeline, ctx.budget, ctx.journal
        self.pipeline = pipeline
        self.client = client
        self._works = ctx.works
        self.journal = journal
        self.budget = budget
        self.guards = Guards(job, pipeline, budget, journal, self.stop)
        self.commits = Committer(job, pipeline, ctx.results, ctx.errors, journal, budget)
        pipeline.on_added = self.commits.changed
        self._stop_when = stop_when
        self.limit = in_flight or AdaptiveLimit(job.concurrency)
        self.limit.report = self._limiter_concluded
        # Without hedging nothing needs to track an attempt (~3 us of CPU each): _process
        # sends it through the client directly.
        self.hedger = Hedger(client, self.limit, self.stats) if job.hedge else None
        self.rpm = Pacer(job.rpm) if job.rpm else None
        self.tpm = Pacer(job.tpm) if job.tpm else None
        self.backoff = ctx.backoff
        self.rejected_backoff = Backoff(
            base=min(job.backoff_base, REJECTION_BASE), cap=min(job.backoff_cap, REJECTION_CAP)
        )
        # A row backing off lends its worker's place to a spare one (at most one each, up to
        # twice the concurrency), so the limit stays filled while rows wait to be retried.
        self._workers = 0
        self._resting = 0
        self._work_group: TaskGroup | None = None
        self.quota = QuotaGate(job, client.provider, ctx.log)
        self.shared = SharedAnswers(pipeline) if job.dedupe and deterministic(job) else None
        self._input_done = anyio.Event()

    # --- the run --------------------------------------------------------------------------

    def _start_helpers(self, helpers: TaskGroup) -> None:
        if self._stop_when is not None:
            helpers.start_soon(self._watch_requests, self._stop_when)
        helpers.start_soon(self.commits.timer, self.stop)
        helpers.start_soon(self.commits.group_commit, self.stop)
        if self.hedger is not None:
            helpers.start_soon(self.hedger.run, self._input_done, helpers, lambda: self.stopping)
        if self.budget.shared is not None:
            helpers.start_soon(self.budget.renew)

    async def _dispatch(self) -> None:
        async with anyio.create_task_group() as work:
            self._work_group = work
            spacing = min(WORKER_START_SPACING, WORKER_RAMP / self.job.concurrency)
            for index in range(self.job.concurrency):
                work.start_soon(self._worker, index * spacing)
        if not self.stopping:
            stats = self.stats
            self.log.info(
                "input read: %d rows, %d already done",
                stats.input_rows,
                stats.skipped,
                extra={"event": "input_read"},
            )

    async def _close(self) -> None:
        self.guards.release_first_rows()
        await self.client.aclose()
        unsaved = await self.commits.last_flush()
        if unsaved is not None:  # outranks an earlier reason: the message says what was lost
            self.stop_reason = unsaved
        self._count_concurrency()
        self.stats.spent = self.budget.spent
        self.journal.close()

    def _ended(self) -> None:
        if isinstance(self.stop_reason, BudgetSpent):  # say what in-flight answers added
            self.stop_reason = BudgetSpent(self.budget.message())

    def stop(self, reason: ZbatchError, in_flight: float | None = None) -> None:
        super().stop(reason, in_flight)
        self.quota.answered()  # requests waiting out a quota pause see the stop

    async def _watch_requests(self, stop_when: Callable[[], Awaitable[ZbatchError]]) -> None:
        self.stop(await stop_when(), self.job.grace_seconds)

    def _resume_hint(self) -> str:
        return f"finished rows are saved in {self.job.output_dir}: run the same command to resume"

    def _on_tick(self) -> None:
        self.guards.check_down()  # also while every attempt hangs
        self._count_concurrency()

    def _count_concurrency(self) -> None:
        self.stats.concurrency = self.limit.current
        self.stats.in_flight = self.limit.in_flight
        self.stats.concurrency_min = self.limit.minimum
        self.stats.limiter = self.limit.conclusion

    def _limiter_concluded(self, conclusion: str) -> None:
        self.log.info(
            "limiter: %s (concurrency %d)",
            conclusion,
            self.limit.current,
            extra={"event": "limit_changed"},
        )

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
        self._workers += 1
        try:
            if not await self._sleep(start_after):
                return
            while (work := await self._next_work()) is not None:
                if self.shared is not None and await self.shared.reuse(work):
                    continue
                await self.journal.room()
                await self._process(work)
                if self.shared is not None:
                    self.shared.settle(work)
                if self._workers > self.job.concurrency + self._resting:
                    return  # a spare, and the row it stood in for is back at work
        finally:
            self._workers -= 1

    async def _rest(self, delay: float) -> bool:
        """Back off for ``delay`` s while a spare worker keeps the slots filled; False if the
        run stopped meanwhile."""
        self._resting += 1
        concurrency = self.job.concurrency
        if (
            self._workers < min(concurrency + self._resting, 2 * concurrency)
            and self._work_group is not None
            and not self._input_done.is_set()
        ):
            self._work_group.start_soon(self._worker, 0.0)
        try:
            return await self._sleep(delay)
        finally:
            self._resting -= 1

    async def _process(self, work: Work) -> None:
        """Send one row until it succeeds, fails for good, or the run stops."""
        job, stats, pipeline = self.job, self.stats, self.pipeline
        started = time.monotonic()
        attempts = 0
        rejections = 0  # 429 / 1302: not counted against max_retries (see REJECTION_BASE)
        answer_retries = 0
        while True:
            async with self.limit.slot() as level:
                if not await self._paced(work):
                    return
                reservation = await self.guards.admit(work)
                if reservation is None:
                    return
                stats.requests += 1
                twin: Success | None = None
                try:
                    if self.hedger is None:
                        outcome = await self.client.send(work.body)
                    else:
                        outcome, twin = await self.hedger.send(work)
                finally:
                    self.budget.release(reservation)
            # The requests waiting for this answer run at the next checkpoint, by when a quota
            # answer below has set the next pause.
            self.quota.answered()
            attempts += 1
            stats.count_attempt(outcome)
            if isinstance(outcome, Success):
                self.guards.bill(outcome, reservation)
                if twin is not None:  # a hedge's twin comes only with an answer
                    self.guards.bill(twin, reservation, hedge=True)
                self.limit.on_success(level)
                self.quota.pause.clear()
                self.guards.down.alive()
                if self.tpm is not None and outcome.total_tokens is not None:
                    self.tpm.adjust(outcome.total_tokens - work.tokens)
                if self.shared is not None:
                    self.shared.resolve(work, outcome)
                failure = pipeline.accept(work, outcome, attempts)
                if failure is None:
                    self.guards.release_first_rows()
                    return
                again = pipeline.again(work, outcome, failure, answer_retries)
                if again is not None:  # a label, JSON or schema answer that does not fit
                    work, answer_retries = again, answer_retries + 1
                    stats.retries[failure.error_type] += 1
                    continue
                self.guards.row_failed(Held(work.id, failure, attempts, outcome.content))
                return
            failure = outcome
            self.guards.observe(failure)
            if failure.scope is Scope.SLOW_DOWN:
                self.limit.on_reject(level)
            if failure.scope is Scope.FATAL:
                pipeline.fail(work.id, failure, attempts)
                code = failure.error_code or failure.status_code
                hint = self.client.provider.fatal_hint(failure)
                self.stop(FatalApiError(f"{failure.message} ({code}); {hint}"))
                return
            if failure.scope is Scope.QUOTA:
                if not self._on_quota(work, failure, attempts):
                    return
                continue
            if failure.scope is Scope.ROW:
                self.guards.row_failed(Held(work.id, failure, attempts, None))
                return
            remaining = job.max_attempt_seconds - (time.monotonic() - started)
            if failure.scope is Scope.SLOW_DOWN:
                rejections += 1
                delay = self.rejected_backoff.delay(
                    rejections - 1, failure.retry_after, remaining=remaining
                )
                spent = False  # a rejection is retried until the row's deadline
            else:
                retries = attempts - rejections
                delay = self.backoff.delay(retries - 1, failure.retry_after, remaining=remaining)
                spent = retries > job.max_retries
            # A wait cut to the deadline (a Retry-After past it) leaves no time for a retry.
            if spent or delay >= remaining:
                self.guards.row_failed(Held(work.id, failure, attempts, None))
                return
            stats.retries[failure.error_type] += 1
            if not await self._rest(delay):
                return

    def _on_quota(self, work: Work, failure: Failure, attempts: int) -> bool:
        """A quota answer: True when the run pauses and tries again (--wait-for-quota)."""
        reason = self.quota.on_quota(failure)
        if reason is None:
            return True
        self.pipeline.fail(work.id, failure, attempts)
        self.stop(reason)
        return False

    async def _paced(self, work: Work) -> bool:
        """Wait out a quota pause and the RPM / TPM pacers; False if the run stopped meanwhile."""
        quota, rpm, tpm = self.quota, self.rpm, self.tpm
        # Without --wait-for-quota a quota answer stops the run: nothing ever waits on quota.
        if self.job.wait_for_quota and not await quota.wait(self._sleep, lambda: self.stopping):
            return False
        if rpm is not None and not await self._sleep(rpm.reserve(1)):
            return False
        if tpm is not None and not await self._sleep(tpm.reserve(work.tokens)):
            return False
        return not self.stopping


def build(ctx: RunContext, options: RunOptions) -> Runner:
    """The online family's parts (see :class:`~zbatch.dispatch.Build`): the HTTP client (on the
    simulated endpoint for --simulate) and the scheduler."""
    job = ctx.job
    transport = options.transport
    if job.simulate:
        transport = SimulatedEndpoint(SimulationSpec.from_job(job))
    client = Client(
        base_url=job.base_url,
        api_key=ctx.api_key,
        timeout=job.timeout,
        max_connections=job.concurrency,
        provider=job.profile,
        transport=transport,
    )
    return Runner(ctx, client=client, in_flight=options.in_flight, stop_when=options.stop_when)
