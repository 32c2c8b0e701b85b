"""The guards of an unattended run, around every request: the budget admits it, every answer
is billed (stats, budget, journal), and a dead endpoint or a job that fails the same way on
its first rows stops the run (zbatch/budget.py and online/health.py hold the rules)."""

from __future__ import annotations

from dataclasses import replace

from ..budget import Budget, Hold
from ..dispatch import Stop
from ..errors import BudgetSpent, EndpointDown, FatalApiError
from ..job.settings import Job
from ..outcome import Failure, Scope, Success
from ..pipeline import RowPipeline, Work
from ..store.journal import Journal
from .health import DownDetector, FirstRows, Held

# The first rows of a run that decide whether the job itself is wrong (a model that does not
# exist, a labels prompt that never yields a label): so many failing the same way stop it.
FIRST_ROWS = 20


class Guards:
    """Admission, billing and the stops of an unattended run, which ``stop`` carries out."""

    def __init__(
        self,
        job: Job,
        pipeline: RowPipeline,
        budget: Budget,
        journal: Journal,
        stop: Stop,
    ) -> None:
        self.job = job
        self.pipeline = pipeline
        self.budget = budget
        self.journal = journal
        self.down = DownDetector(job.down_after)
        self.first_rows = FirstRows(FIRST_ROWS)
        self._stop = stop
        self._stopped = False

    async def admit(self, work: Work) -> Hold | None:
        """Reserve the request's worst case in the budget, or stop the run (exit 5)."""
        prompt_tokens = work.tokens - work.answer_tokens
        reservation = await self.budget.admit(prompt_tokens, work.answer_tokens)
        if reservation is None:
            self._stop(BudgetSpent(self.budget.message()), None)
        return reservation

    def bill(self, answer: Success, hold: Hold, *, hedge: bool = False) -> None:
        """Every answer is paid for, whatever becomes of it: stats, budget, journal. Without
        usable usage it is charged its worst case; a hedge's twin is counted as hedged."""
        self.pipeline.count_usage(answer)
        usd = self.budget.bill(answer, hold, self.pipeline.stats, hedge=hedge)
        self.journal.charge(answer, usd)

    def observe(self, failure: Failure) -> None:
        """A failed attempt: is the endpoint down?"""
        self.down.observe(failure)
        self.check_down()

    def check_down(self) -> None:
        """Stop (exit 69) once the endpoint has answered nothing but failures for down_after."""
        down_for, last = self.down.down_for, self.down.last_failure
        if down_for is None or last is None or self._stopped:
            return
        self._stopped = True
        status = f" {last.status_code}" if last.status_code else ""
        reason = EndpointDown(
            f"the endpoint {self.job.base_url} answered nothing but connection, timeout or "
            f"5xx failures for {down_for:.0f} s (limits.down_after = "
            f"{self.job.down_after:g}); last error: {last.error_type}{status}: "
            f"{last.message}. Check that it is up (and base_url, network, proxy), then run "
            "the same command to resume"
        )
        # A down endpoint will not answer what is in flight: give it the grace period only.
        self._stop(reason, self.job.grace_seconds)

    def row_failed(self, held: Held) -> None:
        """Log a row's failure, unless the first rows are still deciding whether the job
        itself is wrong (then it is held, and on that verdict logged as not its fault)."""
        first = self.first_rows
        if not first.take(held):
            self.release_first_rows()
            self.pipeline.fail(held.row_id, held.failure, held.attempts, answer=held.answer)
            return
        if first.verdict is None:
            return
        for row in first.release() or [held]:
            failure = replace(row.failure, scope=Scope.FATAL)
            self.pipeline.fail(row.row_id, failure, row.attempts, answer=row.answer)
        self._stop(FatalApiError(first.verdict), None)

    def release_first_rows(self) -> None:
        """A row settled well (or the run ends): the rows held meanwhile are logged."""
        if self.first_rows.deciding:
            for row in self.first_rows.release():
                self.pipeline.fail(row.row_id, row.failure, row.attempts, answer=row.answer)
