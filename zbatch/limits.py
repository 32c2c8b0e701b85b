"""Staying inside the provider's limits: adaptive concurrency, RPM/TPM pacing, backoff, quota.

    limit = AdaptiveLimit(ceiling=48)      # in-flight cap, cut on load-made 429/1302s, regrown
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

Clock = Callable[[], float]


class AdaptiveLimit:
    """An in-flight cap that adapts: multiplicative decrease when load causes rejections,
    additive increase on success.

    One rejection is no evidence of load: a provider may answer a steady few percent of
    requests with 429/1302 whatever the concurrency, and cutting on each of them pins the
    limit at its floor. Load shows as rejections *clustered* in time, so the limit is cut
    when more than ``tolerance`` of its last ``current`` outcomes (about one round trip's
    worth at full concurrency) were rejections: a cap the limit is above rejects every
    request over it at once, while background rejections at a steady rate below the
    tolerance seldom reach it. Below ``1 / tolerance`` in flight one rejection is enough.

    Only rejections of requests started since the last cut count, so one overload cuts
    once, not once per request it rejected. The limit regrows by one after
    ``growth_factor * limit`` successes since it last changed.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        decrease: float = 0.7,
        growth_factor: float = 2.0,
        tolerance: float = 0.1,
    ) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.minimum = ceiling
        self.in_flight = 0
        self.rejections = 0
        self._decrease = decrease
        self._growth_factor = growth_factor
        self._tolerance = tolerance
        self._credit = 0.0
        self._epoch = 0
        self._outcomes = 0  # successes and counted rejections so far: the window's clock
        self._rejected: deque[int] = deque()  # _outcomes at each rejection of this epoch
        self._waiters: deque[anyio.Event] = deque()
        self._slot = _Slot(self)

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    @property
    def epoch(self) -> int:
        """How many cuts so far: the epoch of a request starting now, for :meth:`on_reject`."""
        return self._epoch

    def slot(self) -> _Slot:
        """``async with limit.slot() as epoch``: hold one in-flight slot; the epoch is for
        on_reject."""
        return self._slot

    async def _acquire(self) -> None:
        if self.in_flight < self.current and not self._waiters:
            self.in_flight += 1
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            while True:
                await event.wait()
                if self.in_flight < self.current:
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
        free = self.current - self.in_flight
        for _ in range(max(0, min(count, free, len(self._waiters)))):
            self._waiters.popleft().set()

    def on_success(self) -> None:
        """Count a success; grow the limit by one after enough of them."""
        self._outcomes += 1
        if self.limit >= self.ceiling:
            return
        self._credit += 1
        if self._credit >= self._growth_factor * self.current:
            self._credit = 0
            self.limit = min(float(self.ceiling), self.limit + 1)
            self._wake(len(self._waiters))

    def on_reject(self, epoch: int) -> bool:
        """A concurrency rejection of a request started in ``epoch``; True if the limit was cut."""
        self.rejections += 1
        if epoch != self._epoch:
            return False
        self._outcomes += 1
        rejected = self._rejected
        rejected.append(self._outcomes)
        while rejected[0] <= self._outcomes - self.current:
            rejected.popleft()
        if len(rejected) <= self._tolerance * self.current:
            return False
        rejected.clear()
        self._epoch += 1
        self._credit = 0
        # Round, not floor: floor(7 * 0.7) = 4 would undershoot a cap of 6 by a third.
        self.limit = float(max(1, min(self.current - 1, round(self.current * self._decrease))))
        self.minimum = min(self.minimum, self.current)
        return True


class _Slot:
    """The async context manager of :meth:`AdaptiveLimit.slot`; a class, not a generator-based
    one, because it is entered once per request."""

    __slots__ = ("_limit",)

    def __init__(self, limit: AdaptiveLimit) -> None:
        self._limit = limit

    async def __aenter__(self) -> int:
        await self._limit._acquire()
        return self._limit._epoch

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
