"""Hedging the slow tail (opt-in, ``--hedge``): once the input is used up, a stuck attempt
is sent again.

    hedger = Hedger(client, limit, stats)
    helpers.start_soon(hedger.run, input_done, helpers, lambda: runner.stopping)
    outcome, twin = await hedger.send(work)   # twin: the other attempt's answer, to pay for

When most rows are done, the last few can sit on a stuck connection until ``timeout``. Once
the input is used up, an attempt running longer than max(5 * p50, p99, 1 s) of the run's
answered attempts is sent again on a second connection while the concurrency cap has room;
the first answer wins and the other attempt is cancelled, so the row is recorded once. Both
are paid for: a cancelled request may still be finished and billed by the provider, so it is
charged as much as its twin (counted apart: ``hedged_usd``). That is why it is off unless the
user asks for it.

An attempt's age leaves out the time the client itself was stalled (its event loop busy, so
the hedger's own wake-ups come late): a busy client makes every attempt look slow, and only
an answer slow at the endpoint is hedged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from ..client import Client
from ..limits import AdaptiveLimit
from ..outcome import Outcome, Success
from ..pipeline import Work
from ..stats import Stats

# How often the hedger looks for stuck attempts once the input is used up (and measures how
# late its own wake-ups come, from the start).
POLL = 0.05
# A wake-up later than this past its due time is the client stalling, not the endpoint.
STALL_TOLERANCE = 0.01
# No attempt is hedged sooner than this: on a busy machine an event loop can stall for a good
# part of a second, and a fast endpoint's 5 * p50 would then send duplicates for nothing.
FLOOR = 1.0


class Latencies:
    """Latencies of the latest answered attempts, for the hedging threshold."""

    def __init__(self, keep: int = 2000, minimum: int = 20) -> None:
        self._recent: deque[float] = deque(maxlen=keep)
        self._minimum = minimum

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    def hedge_after(self) -> float | None:
        """max(5 * p50, p99, FLOOR) in seconds; None until enough attempts were answered."""
        if len(self._recent) < self._minimum:
            return None
        ordered = sorted(self._recent)
        p50 = ordered[len(ordered) // 2]
        p99 = ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]
        return max(5 * p50, p99, FLOOR)


@dataclass(eq=False, slots=True)
class Attempt:
    """An attempt in flight, as the hedger sees it.

    ``cut`` is what cancels it when its hedge answers first: asyncio's own timeout, due only
    then. An anyio CancelScope per attempt cost ~4 µs of CPU per row (bench/overhead.py);
    zbatch runs on asyncio only (aiohttp), and asyncio's timeout counts its cancellation apart
    from anyio's, so a run's stop still cancels the attempt as such."""

    work: Work
    started: float
    stalled: float  # the client's stall time so far, when it started
    cut: asyncio.Timeout
    hedge: anyio.CancelScope | None = None  # the second attempt, once sent
    hedge_answer: Success | None = None  # the second attempt's answer, when it came first


class Hedger:
    """Sends attempts, and a second copy of those stuck at the end of the input."""

    def __init__(self, client: Client, limit: AdaptiveLimit, stats: Stats) -> None:
        self._client = client
        self._limit = limit
        self._stats = stats
        self.latencies = Latencies()
        self._attempts: set[Attempt] = set()
        self.stalled = 0.0  # seconds the client's own loop was too busy to wake on time

    async def send(self, work: Work) -> tuple[Outcome, Success | None]:
        """One attempt (or its hedge's answer, if that came first), and the answer its twin is
        paid for with: the twin's own if it came, else this one's (None: no twin was sent)."""
        attempt = Attempt(work, time.monotonic(), self.stalled, asyncio.timeout(None))
        self._attempts.add(attempt)
        try:
            async with attempt.cut:
                outcome = await self._client.send(work.body)
        except TimeoutError:
            if not attempt.cut.expired():
                raise
            # the hedge answered first; this attempt was cancelled
            assert attempt.hedge_answer is not None
            outcome = attempt.hedge_answer
        else:
            if isinstance(outcome, Success) and outcome.latency_ms is not None:
                self.latencies.add(outcome.latency_ms / 1000)
        finally:
            self._attempts.discard(attempt)
            if attempt.hedge is not None:
                attempt.hedge.cancel()
        if attempt.hedge is None or not isinstance(outcome, Success):
            return outcome, None
        twin = attempt.hedge_answer if attempt.hedge_answer is not outcome else None
        return outcome, twin or outcome

    async def run(
        self, input_done: anyio.Event, helpers: TaskGroup, stopping: Callable[[], bool]
    ) -> None:
        """Once the input is used up, hedge each stuck attempt once, while the cap has room."""
        while not stopping():
            due = time.monotonic() + POLL
            await anyio.sleep(POLL)
            late = time.monotonic() - due
            if late > STALL_TOLERANCE:
                self.stalled += late
                continue  # the client was busy: no attempt's age is to be trusted this round
            if not input_done.is_set():
                continue
            after = self.latencies.hedge_after()
            stuck = [] if after is None else self._stuck(after)
            for attempt in stuck[: self._limit.current - self._limit.in_flight]:
                attempt.hedge = anyio.CancelScope()
                helpers.start_soon(self._hedge, attempt)

    def _stuck(self, after: float) -> list[Attempt]:
        now, stalled = time.monotonic(), self.stalled
        return [
            a
            for a in self._attempts
            if a.hedge is None and now - a.started - (stalled - a.stalled) > after
        ]

    async def _hedge(self, attempt: Attempt) -> None:
        """The second attempt: if it answers first, the first one is cancelled."""
        assert attempt.hedge is not None
        with attempt.hedge:
            async with self._limit.slot():
                self._stats.hedged += 1  # not in ``requests``: those are one per attempt
                outcome = await self._client.send(attempt.work.body)
            if isinstance(outcome, Success):
                attempt.hedge_answer = outcome
                if attempt in self._attempts:  # the first attempt is still in flight
                    attempt.cut.reschedule(-math.inf)  # due at once
