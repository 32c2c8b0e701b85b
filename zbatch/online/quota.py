"""--wait-for-quota as the workers see it: one pause for the whole run, then one request at a
time finds out whether the quota is back (limits.QuotaPause decides how long to wait)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from ..errors import QuotaReached
from ..job.settings import Job
from ..limits import QuotaPause
from ..outcome import Failure
from ..providers import Provider


class QuotaGate:
    """Holds every dispatch while a quota pause lasts; after it, lets one request through
    until that request's answer says whether the quota is back."""

    def __init__(self, job: Job, provider: Provider, log: logging.Logger) -> None:
        self.job = job
        self.provider = provider
        self.log = log
        self.pause = QuotaPause(patience=job.quota_wait_seconds)
        self._resume_at = 0.0  # monotonic time before which nothing is sent
        self._probe: anyio.Event | None = None  # set when the one request of a stretch ends

    def on_quota(self, failure: Failure) -> QuotaReached | None:
        """A quota answer: None when the run pauses (--wait-for-quota) and tries again, else
        the reason to stop."""
        reset = self.provider.quota_reset(failure.message)
        if self.job.wait_for_quota and self._pause_for(reset):
            return None
        return QuotaReached(f"quota reached: {failure.message}; {self._advice(reset)}")

    async def wait(
        self, sleep: Callable[[float], Awaitable[bool]], stopping: Callable[[], bool]
    ) -> bool:
        """Wait out a pause (and another request's probe); False if the run stopped."""
        while not stopping():
            paused = self._resume_at - time.monotonic()
            if paused > 0:
                await sleep(paused)
            elif self._probe is not None:
                await self._probe.wait()
            else:
                break
        if stopping():
            return False
        if self.pause.exhausted:  # this request finds out whether the quota is back
            self._probe = anyio.Event()
        return True

    def answered(self) -> None:
        """A request ended: the requests waiting on the probe go on (a quota answer has
        set the next pause by then)."""
        if self._probe is not None:
            self._probe.set()
            self._probe = None

    def _pause_for(self, reset: dt.datetime | None) -> bool:
        if self._resume_at > time.monotonic():
            return True  # another worker's quota answer has paused the run already
        wait = self.pause.pause(reset)
        if wait is None:
            return False
        self._resume_at = time.monotonic() + wait
        self.log.warning(
            "quota reached: pausing all requests for %.0f s (--wait-for-quota)",
            wait,
            extra={"event": "paused_for_quota"},
        )
        return True

    def _advice(self, reset: dt.datetime | None) -> str:
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
