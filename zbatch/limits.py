"""Staying inside the provider's limits: adaptive concurrency, RPM/TPM pacing, backoff, quota.

    limit = AdaptiveLimit(ceiling=48)      # in-flight limit: holds under a cap, not for a storm
    pacer = Pacer(per_minute=600)          # evenly spaced starts, never a burst
    delay = Backoff(base=1, cap=60).delay(attempt=3, retry_after=None, remaining=40.0)
    pause = QuotaPause().pause(reset)      # --wait-for-quota: seconds to hold, or None to stop

Time is read through an injectable ``clock`` so the arithmetic is tested without sleeping.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import deque
from collections.abc import Callable

import anyio

from .rejections import CAP_ABOVE, Rejections

Clock = Callable[[], float]


class AdaptiveLimit:
    """An in-flight limit that tells a concurrency cap from a storm of rejections.

    Each request's slot says how many were in flight at its start (its *level*); each answer
    is counted at its level by :class:`~zbatch.rejections.Rejections`, which weighs a cap
    (rejections above a level, none under it) against a storm or background noise (a share
    of rejections whatever the level). What the limit does:

    - the first rejection holds the limit just under the level it was sent at: a cap is
      found at once, and the requests of a start-up burst above it wait instead of being
      rejected one by one;
    - when the counts show a cap at C (:data:`~zbatch.rejections.CAP_EVIDENCE`) the limit
      holds at C and probes C + 1 after ``probe_after * C`` successes; each probe the cap
      rejects doubles the wait for the next (up to ``longest_probe * C``), and a probe
      level that answers ``PROBE_OK`` times moves the cap up;
    - when they show that rejections do not fall when in-flight falls, the limit goes back
      to where it was (the ceiling) and stays there: the rows are retried after a short
      jittered backoff while the other requests go on. Only a rejection share far above
      that noise (``SURGE`` more) tests again, by holding 0.7 of the limit;
    - while holding, if most requests under the hold are rejected too, it holds 0.7 lower;
      more than half of all requests rejected is never called noise.

    ``conclusion`` says in words what the limit concluded and why; ``report`` (if set) is
    called with it whenever it changes.
    """

    PROBE_OK = 3
    SURGE = 0.25

    def __init__(
        self,
        ceiling: int,
        *,
        probe_after: float = 2.0,
        longest_probe: float = 64.0,
    ) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.minimum = ceiling
        self.in_flight = 0
        self.rejections = 0
        self.judge = Rejections(ceiling)
        self.verdict = "none"  # none (no rejection yet) | holding | cap | noise
        self.cap = ceiling  # the level held (holding, cap)
        self.conclusion = "no concurrency rejections"
        self.report: Callable[[str], None] | None = None
        self._probe_after = probe_after
        self._longest_probe = longest_probe
        self._probe_every = probe_after * ceiling
        self._credit = 0  # successes since the limit last changed, towards a probe
        self._probe_ok = 0  # successes of requests above the held level
        self._restore = ceiling  # where a hold that finds noise goes back to
        self._noise = 0.0  # the rejection share called noise
        self._recent = 0.0  # rejection share of recent answers (moving average)
        self._since_judged = 0
        self._held = [0, 0]  # answers and rejections at or under the held level since the hold
        self._surge = False  # holding because the rejections rose far above the noise
        self._waiters: deque[anyio.Event] = deque()
        self._slot = _Slot(self)

    @property
    def current(self) -> int:
        return self.limit

    def slot(self) -> _Slot:
        """``async with limit.slot() as level``: hold one in-flight slot; the level (how many
        were in flight at its start, itself included) is for on_success / on_reject."""
        return self._slot

    async def _acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            while True:
                await event.wait()
                if self.in_flight < self.limit:
                    break
                # Another task took the slot between the wake-up and now: wait at the front.
                event = anyio.Event()
                self._waiters.appendleft(event)
        except BaseException:
            if event in self._waiters:
                self._waiters.remove(event)
            elif event.is_set():
                self._wake(1)  # pass on the wake-up this task can no longer use
            raise
        self.in_flight += 1

    def _release(self) -> None:
        self.in_flight -= 1
        if self._waiters:  # per request: most often nobody waits
            self._wake(1)

    def _wake(self, count: int) -> None:
        free = self.limit - self.in_flight
        for _ in range(max(0, min(count, free, len(self._waiters)))):
            self._waiters.popleft().set()

    def _set(self, limit: int) -> None:
        limit = max(1, min(self.ceiling, limit))
        self._credit = 0
        if limit > self.limit:
            self.limit = limit
            self._wake(len(self._waiters))
        else:
            self.limit = limit
            self.minimum = min(self.minimum, limit)

    def _conclude(self, conclusion: str) -> bool:
        self.conclusion = conclusion
        if self.report is not None:
            self.report(conclusion)
        return True

    def on_success(self, level: int = 1) -> None:
        """Count an answer of a request started at ``level``."""
        self.judge.record(level, False)
        self._recent *= self._decay
        verdict = self.verdict
        if verdict == "none" or verdict == "noise":
            return
        if level > self.cap and self.limit > self.cap:
            self._probe_ok += 1
            if self._probe_ok >= self.PROBE_OK:  # the level above answers: the cap moved
                self._hold(self.cap + 1, self._probe_after * (self.cap + 1))
                if self.cap >= self.ceiling:
                    self.verdict = "none"
                    self._conclude(f"no cap under the ceiling of {self.ceiling}: probes answer")
                return
        self._credit += 1
        if verdict == "holding":
            self._held[0] += 1
            self._since_judged += 1
            if self._since_judged >= max(1, self.judge.top // 16) and self._judge():
                return
        if self._credit >= self._probe_every and self.limit == self.cap:
            self._set(self.cap + 1)  # probe one level higher

    def on_reject(self, level: int = 1) -> bool:
        """A concurrency rejection (429 / 1302) of a request started at ``level``; True when
        the limiter's conclusion changed (then ``conclusion`` says what and why)."""
        self.rejections += 1
        self.judge.record(level, True)
        self._recent = self._recent * self._decay + (1.0 - self._decay)
        verdict = self.verdict
        if verdict == "none":
            self._restore = self.limit
            self.verdict = "holding"
            self._hold(min(self.limit, level) - 1, self._probe_after * self.limit)
            if self._judge():
                return True
            return self._conclude(
                f"holding {self.limit} in flight: a rejection at {level}, testing whether "
                "rejections track in-flight (a cap) or not (a storm)"
            )
        if verdict == "noise":
            if self._recent > self._noise + self.SURGE and self.judge.rejected >= 2 * self.limit:
                self._restore = self.limit
                self.verdict = "holding"
                self._hold(round(self.limit * 0.7), self._probe_after * self.limit)
                self._surge = True
                return self._conclude(
                    f"holding {self.limit} in flight: {self._recent:.0%} of recent requests "
                    f"rejected, above the {self._noise:.0%} taken for noise"
                )
            return False
        if level > self.cap:  # a probe (or a request of before the hold) met the cap
            if self.limit > self.cap:
                self._probe_every = min(
                    self._probe_every * 2, self._longest_probe * max(1, self.cap)
                )
                self._set(self.cap)
            self._probe_ok = 0
            return self._judge() if verdict == "holding" else False
        if verdict == "holding":
            held = self._held
            held[0] += 1
            held[1] += 1
            if held[0] >= max(8, self.cap) and held[1] >= CAP_ABOVE * held[0] and self.cap > 1:
                # Most requests under the hold are rejected too: not settled yet, hold lower.
                self._hold(round(self.cap * 0.7), self._probe_after * self.cap)
                return self._conclude(
                    f"holding {self.limit} in flight: most requests were rejected under "
                    f"{round(self.limit / 0.7)} too"
                )
        return self._judge()

    @property
    def _decay(self) -> float:
        return 1.0 - 1.0 / max(16, 2 * self.limit)

    def _hold(self, level: int, probe_every: float) -> None:
        self.cap = max(1, min(self.ceiling, level))
        self._held = [0, 0]
        self._probe_every = probe_every
        self._probe_ok = 0
        self._set(self.cap)

    def _judge(self) -> bool:
        """Weigh the counts (holding or at a cap); True when the conclusion changed."""
        self._since_judged = 0
        judge = self.judge
        split = judge.cap_evidence()
        if self.verdict == "cap" and (split is None or split.cap >= self.cap):
            # Rejections at or under a cap found before are background (or the cap moved down,
            # which the counts show in time); probes above it move it up.
            return False
        if split is not None:
            self.verdict = "cap"
            self._hold(split.cap, self._probe_after * split.cap)
            return self._conclude(f"cap≈{split.cap}: {split.describe()}")
        held = self._held
        # A hold for a surge is tested where it holds: rejections must fall under it.
        tested = not self._surge or (held[0] >= 8 and held[1] < CAP_ABOVE * held[0])
        # More than half of everything rejected is no noise to send through at full
        # concurrency: the hold stays (and steps down), probing upwards.
        if tested and judge.share < CAP_ABOVE and judge.noise():
            self._surge = False
            self.verdict = "noise"
            self._noise = self._recent = judge.share
            self._set(self._restore)
            self.cap = self.ceiling
            low, high = judge.levels()
            return self._conclude(
                f"no cap: {judge.share:.0%} of requests rejected at in-flight levels "
                f"{low}-{high} alike (a storm or background noise), so concurrency stays at "
                f"{self.limit}"
            )
        return False


class _Slot:
    """The async context manager of :meth:`AdaptiveLimit.slot`; a class, not a generator-based
    one, because it is entered once per request."""

    __slots__ = ("_limit",)

    def __init__(self, limit: AdaptiveLimit) -> None:
        self._limit = limit

    async def __aenter__(self) -> int:
        await self._limit._acquire()
        return self._limit.in_flight

    async def __aexit__(self, *exc_info: object) -> None:
        self._limit._release()


class Pacer:
    """Spaces starts evenly so that no 60-second window holds more than ``per_minute`` units.

    A generic cell-rate algorithm with no burst allowance: each reservation of
    ``cost`` units moves the theoretical arrival time on by ``cost * interval``.
    Requests use cost 1 (RPM); estimated tokens use their count (TPM), corrected
    later by :meth:`adjust` with the real usage.

    Spacing alone lets a window hold the cap plus the last start's cost, which matters
    when one request is a sizeable share of a TPM cap; so the starts of the last minute
    are also kept, and a start waits until its cost fits beside them.
    """

    # Aim a little under the cap, so clock jitter never puts cap+1 starts in a window.
    HEADROOM = 0.98
    # Starts this far apart are never in the same minute, however the window's ends are drawn.
    WINDOW = 60.001

    def __init__(self, per_minute: float, *, clock: Clock = time.monotonic) -> None:
        self.per_minute = per_minute
        self._interval = 60.0 / (per_minute * self.HEADROOM)
        self._clock = clock
        self._tat: float | None = None
        self._recent: deque[tuple[float, float]] = deque()  # (start, cost) within a minute
        self._recent_cost = 0.0

    def reserve(self, cost: float = 1.0) -> float:
        """Book the next start for ``cost`` units; returns seconds to wait before starting."""
        now = self._clock()
        start = now if self._tat is None else max(self._tat, now)
        start = self._fit_in_window(start, cost)
        self._tat = start + cost * self._interval
        return start - now

    def _fit_in_window(self, start: float, cost: float) -> float:
        """The earliest time from ``start`` when ``cost`` more units keep the last minute
        within the cap (a single start dearer than the cap goes alone)."""
        recent = self._recent
        if recent:
            start = max(start, recent[-1][0])  # starts stay in order after an adjust
        while recent and (
            recent[0][0] <= start - self.WINDOW or self._recent_cost + cost > self.per_minute
        ):
            oldest, oldest_cost = recent.popleft()
            self._recent_cost -= oldest_cost
            start = max(start, oldest + self.WINDOW)
        recent.append((start, cost))
        self._recent_cost += cost
        return start

    def adjust(self, delta: float) -> None:
        """Correct an earlier reservation by ``delta`` units (real usage minus estimate)."""
        if self._tat is not None:
            self._tat = max(self._clock(), self._tat + delta * self._interval)

    async def wait(self, cost: float = 1.0) -> None:
        delay = self.reserve(cost)
        if delay > 0:
            await anyio.sleep(delay)


class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt)).

    A server's ``Retry-After`` is honoured as a minimum, but no wait is longer than
    ``longest`` nor than the caller's ``remaining`` time: a header asking for days, or a
    cap that is infinite, must not park a row past its deadline. A wait cut to
    ``remaining`` means the next attempt would start at the deadline, so the caller
    gives the row up instead of sleeping.
    """

    def __init__(
        self,
        *,
        base: float = 1.0,
        cap: float = 60.0,
        longest: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.longest = longest
        self._rng = rng or random.Random()

    def delay(
        self, attempt: int, retry_after: float | None = None, remaining: float | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), at most ``remaining``."""
        most = self.longest if remaining is None else min(self.longest, max(0.0, remaining))
        ceiling = self.base * 2.0 ** min(attempt, 30)
        # "not <=" also catches NaN, which min() would pass through or drop by argument order.
        if not ceiling <= self.cap:
            ceiling = self.cap
        wait = self._rng.uniform(0.0, min(ceiling, most))
        if retry_after is not None and retry_after > wait:  # False for NaN: no usable header
            wait = retry_after
        return wait if wait <= most else most


class QuotaPause:
    """How long ``--wait-for-quota`` holds every request after a quota answer, or when to stop.

        pause = QuotaPause()
        wait = pause.pause(reset)     # on a quota answer: seconds to hold, or None: stop (exit 4)
        pause.clear()                 # on a success: the quota is back

    A named reset in the future is waited for. Once it has passed (or when none is named)
    and the quota still answers exhausted, the pauses double from ``first`` up to ``cap``,
    so a wrong reset time is probed ever more rarely instead of every second. A stretch of
    quota answers (from the first to the next success) lasts at most ``patience`` seconds
    in all: a pause that would end later is refused, and the caller stops.
    """

    def __init__(
        self,
        *,
        first: float = 1.0,
        cap: float = 300.0,
        patience: float = 3600.0,
        clock: Clock = time.time,
    ) -> None:
        self.first = first
        self.cap = cap
        self.patience = patience
        self._clock = clock
        self._since: float | None = None  # clock at the stretch's first quota answer
        self._probes = 0  # pauses past the reset in this stretch

    def pause(self, reset: dt.datetime | None) -> float | None:
        """Seconds to hold all requests after a quota answer naming ``reset`` (aware), or
        None when the quota cannot be waited for within the patience."""
        now = self._clock()
        if self._since is None:
            self._since = now
        until_reset = None if reset is None else reset.timestamp() - now
        if until_reset is not None and until_reset > 0:
            wait = until_reset
        else:
            wait = min(self.cap, self.first * 2.0 ** min(self._probes, 30))
            self._probes += 1
        if now + wait > self._since + self.patience:
            return None
        return wait

    @property
    def exhausted(self) -> bool:
        """Whether a stretch is open: a quota answer came, and no success since."""
        return self._since is not None

    def clear(self) -> None:
        """A request got through: the next quota answer starts a new stretch."""
        self._since = None
        self._probes = 0
