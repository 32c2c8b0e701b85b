"""AdaptiveLimit and Rejections (a cap told from a storm), Pacer (RPM/TPM spacing), Backoff.

The pacer is driven by a fake clock, so no test sleeps for more than a few milliseconds.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import heapq
import itertools
import math
import random
import time
from collections.abc import Callable

import anyio
import pytest

from zbatch.errors import JobError
from zbatch.job import Job
from zbatch.limits import AdaptiveLimit, Backoff, Pacer, QuotaPause
from zbatch.rejections import Rejections


class FakeClock:
    """A clock backed by a list: tests move ``now[0]`` by hand."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = [start]

    def __call__(self) -> float:
        return self.now[0]


def max_in_window(times: list[float], weights: list[float] | None = None, span=60.0) -> float:
    """The largest total weight of events in any closed window [t, t + span]."""
    order = sorted(range(len(times)), key=times.__getitem__)
    starts = [times[i] for i in order]
    values = [1.0 if weights is None else weights[i] for i in order]
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    best = 0.0
    for i, start in enumerate(starts):
        j = bisect.bisect_right(starts, start + span)
        best = max(best, prefix[j] - prefix[i])
    return best


# --- AdaptiveLimit --------------------------------------------------------------------------


def test_many_tasks_never_exceed_the_current_limit_even_while_it_is_cut():
    limit = AdaptiveLimit(ceiling=8)
    rng = random.Random(7)
    inside = 0
    peak = 0
    entries: list[tuple[int, int]] = []  # (tasks inside after entering, limit.current then)
    done = 0

    async def worker(number: int) -> None:
        nonlocal inside, peak, done
        async with limit.slot() as level:
            inside += 1
            peak = max(peak, inside)
            entries.append((inside, limit.current))
            await anyio.sleep(rng.uniform(0, 0.002))
            if number % 25 == 24:
                limit.on_reject(level)
            else:
                limit.on_success(level)
            inside -= 1
        done += 1

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for number in range(300):
                    tg.start_soon(worker, number)

    anyio.run(main)
    assert done == 300
    assert all(count <= current for count, current in entries), entries
    assert peak == 8  # the full ceiling was used before the first cut
    assert limit.in_flight == 0
    assert limit.rejections == 12
    assert limit.minimum < 8


def test_a_cancelled_waiter_does_not_lose_a_slot():
    """A waiter cancelled just as its slot frees up does not strand the slot: the next one runs."""
    limit = AdaptiveLimit(ceiling=1)
    got: list[str] = []

    async def main() -> None:
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                b_scope = anyio.CancelScope()

                async def b() -> None:
                    with b_scope:
                        async with limit.slot():
                            got.append("b")
                            await anyio.sleep(1)  # cancelled long before this ends

                async def c() -> None:
                    async with limit.slot():
                        got.append("c")

                async with limit.slot():
                    tg.start_soon(b)
                    await anyio.sleep(0.001)
                    tg.start_soon(c)
                    await anyio.sleep(0.001)  # b and c are queued, in that order
                # The slot was released and b woken; cancel b before it runs.
                b_scope.cancel()

    anyio.run(main)
    assert "c" in got
    assert limit.in_flight == 0


# --- Rejections: a cap told from a storm, on scripted answers --------------------------------


def scripted(ceiling: int, answers: list[tuple[int, bool]]) -> Rejections:
    """A Rejections fed ``(level, rejected)`` answers in order."""
    judge = Rejections(ceiling)
    for level, rejected in answers:
        judge.record(level, rejected)
    return judge


def test_a_start_up_burst_against_a_cap_of_six_is_a_cap_of_six():
    """48 requests go out at levels 1..48; the server holds 6 and rejects the rest."""
    judge = scripted(48, [(level, level > 6) for level in range(1, 49)])
    split = judge.cap_evidence()
    assert split is not None
    assert (split.cap, split.rejected_above, split.answers_above) == (6, 42, 42)
    assert (split.rejected_under, split.answers_under) == (0, 6)
    assert not judge.noise()
    assert split.describe() == (
        "42 of 42 requests started above 6 in flight were rejected, 0 of 6 at or under it"
    )


def test_a_few_rejections_above_answers_under_are_enough_for_a_cap():
    """The first answers back: 4 rejections at 7..10, then the 6 under them answer."""
    judge = scripted(48, [(7, True), (8, True), (9, True), (10, True)])
    assert judge.cap_evidence() is None  # nothing under them answered yet: no evidence
    assert not judge.noise()
    for level in range(1, 7):
        judge.record(level, False)
    split = judge.cap_evidence()
    assert split is not None and split.cap == 6


@pytest.mark.parametrize("share", [0.02, 0.3, 0.6])
def test_rejections_at_every_level_alike_are_noise_not_a_cap(share):
    rng = random.Random(5)
    answers = [(level, rng.random() < share) for level in range(1, 65)]
    answers += [(64, rng.random() < share) for _ in range(2000)]
    judge = scripted(64, answers)
    assert judge.rejected > 0
    assert judge.cap_evidence() is None
    assert judge.noise()
    assert judge.share == pytest.approx(share, abs=0.05)


def test_a_cap_is_found_under_background_rejections():
    rng = random.Random(3)
    answers = [(level, level > 12 or rng.random() < 0.02) for level in range(1, 49)]
    answers += [(rng.randint(1, 12), rng.random() < 0.02) for _ in range(600)]
    judge = scripted(48, answers)
    split = judge.cap_evidence()
    assert split is not None and split.cap == 12
    assert not judge.noise()


def test_rejections_only_above_some_level_are_no_noise_whatever_their_number():
    """All rejected, nothing under them answered yet: a cap is not ruled out."""
    judge = scripted(48, [(level, True) for level in range(7, 48)])
    assert judge.answers >= 16
    assert not judge.noise()


def test_counts_are_halved_every_window_so_old_evidence_fades():
    judge = Rejections(4, window=10)
    for _ in range(9):
        judge.record(2, True)
    assert (judge.answers, judge.rejected) == (9, 9)
    judge.record(1, False)  # the 10th answer: everything halves
    assert (judge.answers, judge.rejected) == (5, 4.5)


# --- AdaptiveLimit: what it does with the verdicts -------------------------------------------


def concluded(limit: AdaptiveLimit) -> list[str]:
    said: list[str] = []
    limit.report = said.append
    return said


def test_the_first_rejection_holds_just_under_its_level_and_a_cap_is_concluded():
    limit = AdaptiveLimit(ceiling=48)
    said = concluded(limit)
    assert limit.on_reject(7) is True
    assert (limit.current, limit.verdict) == (6, "holding")
    assert said[-1].startswith("holding 6 in flight: a rejection at 7")
    for level in (8, 9, 10):
        limit.on_reject(level)  # the rest of the burst: no further cut
    assert limit.current == 6
    for level in range(1, 7):
        limit.on_success(level)
    assert (limit.verdict, limit.current, limit.minimum) == ("cap", 6, 6)
    # Concluded as soon as the evidence sufficed: at the fifth answer under the rejections.
    assert said[-1] == (
        "cap≈6: 4 of 4 requests started above 6 in flight were rejected, 0 of 5 at or under it"
    )
    assert limit.conclusion == said[-1]
    assert limit.rejections == 4


def test_at_a_cap_probes_above_it_grow_rarer_each_time_it_rejects_them():
    limit = AdaptiveLimit(ceiling=48)
    for level in range(7, 49):
        limit.on_reject(level)
    for level in range(1, 7):
        limit.on_success(level)
    assert (limit.verdict, limit.current) == ("cap", 6)
    waits = []
    for _ in range(5):
        successes = 0
        while limit.current == 6:
            limit.on_success(6)
            successes += 1
        waits.append(successes)
        assert limit.current == 7  # the probe
        assert limit.on_reject(7) is False  # the cap holds: nothing new to say
        assert limit.current == 6
    assert waits[0] <= 12  # 2 x 6 successes since the cap was concluded (some came before)
    assert waits[1:] == [24, 48, 96, 192]
    assert limit.minimum == 6


def test_a_probe_that_answers_moves_the_cap_up():
    limit = AdaptiveLimit(ceiling=8)
    said = concluded(limit)
    for level in (7, 8):
        limit.on_reject(level)
    for level in range(1, 7):
        limit.on_success(level)
    assert limit.current == 6
    while limit.current == 6:
        limit.on_success(6)
    for _ in range(AdaptiveLimit.PROBE_OK):
        limit.on_success(7)
    assert (limit.cap, limit.current) == (7, 7)
    while limit.current == 7:
        limit.on_success(7)
    for _ in range(AdaptiveLimit.PROBE_OK):
        limit.on_success(8)
    assert (limit.current, limit.verdict) == (8, "none")
    assert said[-1] == "no cap under the ceiling of 8: probes answer"


def test_a_storm_is_concluded_and_the_limit_goes_back_to_the_ceiling():
    limit = AdaptiveLimit(ceiling=64)
    said = concluded(limit)
    rng = random.Random(11)
    limit.on_reject(2)  # an early rejection of the start-up burst
    assert limit.current == 1
    for level in range(3, 65):  # the rest of the burst answers: 30 % rejected, at any level
        if rng.random() < 0.3:
            limit.on_reject(level)
        else:
            limit.on_success(level)
        if limit.verdict == "noise":
            break
    assert (limit.verdict, limit.current, limit.minimum) == ("noise", 64, 1)
    assert said[-1].startswith("no cap: ")
    assert "(a storm or background noise), so concurrency stays at 64" in said[-1]
    for _ in range(5000):  # the storm goes on: the limit stays
        if rng.random() < 0.3:
            assert limit.on_reject(64) is False
        else:
            limit.on_success(64)
    assert limit.current == 64


def test_most_requests_rejected_at_every_level_is_never_sent_through_at_full_concurrency():
    """70 % rejected whatever the level (an account-wide limit, say): not called noise, so the
    limit does not go back to the ceiling; it holds low and probes."""
    limit = AdaptiveLimit(ceiling=16)
    rng = random.Random(4)
    for _ in range(3000):
        level = limit.current
        if rng.random() < 0.7:
            limit.on_reject(level)
        else:
            limit.on_success(level)
    assert limit.verdict != "noise"
    assert limit.current < 16


def test_a_surge_far_above_the_noise_tests_again_and_finds_a_cap_under_it():
    limit = AdaptiveLimit(ceiling=64)
    rng = random.Random(2)
    for level in range(1, 65):
        if rng.random() < 0.02:
            limit.on_reject(level)
        else:
            limit.on_success(level)
    for _ in range(3000):
        if rng.random() < 0.02:
            limit.on_reject(64)
        else:
            limit.on_success(64)
    assert (limit.verdict, limit.current) == ("noise", 64)
    said = concluded(limit)
    # Another client takes most of the key's share: everything above 20 is rejected.
    for _ in range(2000):
        level = limit.current
        if level > 20:
            limit.on_reject(level)
        else:
            limit.on_success(level)
    assert said[0].startswith("holding 45 in flight: ")
    assert limit.verdict == "cap"
    assert limit.cap <= 20
    assert limit.current <= 21


# --- AdaptiveLimit on a simulated server ----------------------------------------------------


@dataclasses.dataclass
class SimRun:
    """What a simulated run did; ``mean_limit`` is the limit averaged over simulated time."""

    rows: int
    requests: int = 0
    rejected: int = 0
    seconds: float = 0.0
    limit_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def mean_limit(self) -> float:
        return self.limit_seconds / self.seconds


def simulate(
    limit: AdaptiveLimit,
    rows: int,
    *,
    latency: float,
    cap: int | None = None,
    background: float = 0.0,
    tick: float = 0.0,
    seed: int = 1,
) -> SimRun:
    """Send ``rows`` rows through ``limit`` to a simulated server, on a simulated clock.

    The server rejects at once a request that finds ``cap`` others in flight, and answers a
    share ``background`` of the rest with a rejection after ``latency``, whatever the load.
    The client works as the runner does: one worker per unit of the ceiling, a request starts
    when a slot is free (its level is the client's in-flight count, itself included), a
    rejected row is retried by its worker after a jittered backoff, and requests start all at
    once at the beginning (the worst case). With ``tick`` > 0 the client sees answers, and
    sends, only every ``tick`` seconds: a starved event loop on a loaded machine, which
    answers many requests before it reacts to any of them.
    """
    rng = random.Random(seed)
    backoff = Backoff(base=0.05, cap=1.0, rng=rng)
    events: list[tuple[float, int, str, int, int]] = []  # time, order, kind, level, attempts
    order = itertools.count()
    run = SimRun(rows)
    fresh, ready, backing_off, in_flight, server, now = rows, [], 0, 0, 0, 0.0

    def seen(at: float) -> float:
        return at if tick == 0 else max(at, math.ceil(at / tick) * tick)

    def push(at: float, kind: str, level: int = 0, attempts: int = 0) -> None:
        heapq.heappush(events, (at, next(order), kind, level, attempts))

    def dispatch() -> None:
        nonlocal fresh, in_flight, server
        while in_flight < limit.current:
            if ready:
                attempts = ready.pop()
            elif fresh and in_flight + backing_off + len(ready) < limit.ceiling:
                fresh, attempts = fresh - 1, 0
            else:
                return
            in_flight, server = in_flight + 1, server + 1
            run.requests += 1
            if cap is not None and server > cap:
                done, kind = now + 0.0005, "rejected"
            else:
                done, kind = now + latency, "rejected" if rng.random() < background else "ok"
            push(done, "server")  # the server counts a request until it has answered it
            push(seen(done), kind, in_flight, attempts)

    dispatch()
    while events:
        at, _, kind, level, attempts = heapq.heappop(events)
        run.limit_seconds += limit.current * (at - now)
        now = at
        if kind == "server":
            server -= 1
        elif kind == "retry":
            backing_off -= 1
            ready.append(attempts)
        else:
            in_flight -= 1
            if kind == "ok":
                limit.on_success(level)
            else:
                run.rejected += 1
                limit.on_reject(level)
                backing_off += 1
                push(seen(now + backoff.delay(attempts)), "retry", attempts=attempts + 1)
        if not events or events[0][0] > now:  # react once everything due now has been seen
            dispatch()
    run.seconds = now
    assert fresh == 0 and not ready and in_flight == 0  # every row went through
    return run


@pytest.mark.parametrize("tick", [0.0, 0.005, 0.05])
def test_an_unknown_cap_is_found_with_few_rejections_however_late_the_client_reacts(tick):
    """Issue 25: from a ceiling of 48, a cap of 6 is found with < 5 % rejected and held, even
    when the client reacts to answers only every 50 ms (2.5 round trips)."""
    limit = AdaptiveLimit(ceiling=48)
    run = simulate(limit, 1500, latency=0.02, cap=6, tick=tick)
    assert run.rejected < 0.05 * run.requests, (run.rejected, run.requests)
    assert limit.verdict == "cap"
    assert limit.conclusion.startswith("cap≈6: ")
    assert limit.minimum == 6  # no request is rejected at or under the cap: never below it
    assert run.mean_limit == pytest.approx(6, abs=0.5)


@pytest.mark.parametrize("ceiling", [8, 32, 256])
def test_background_rejections_keep_the_full_concurrency(ceiling):
    """2 % of answers are rejections that have nothing to do with load: the limit is the
    ceiling for all but the first moments, and the run keeps >= 0.9 x the throughput of a run
    without them."""
    clean = simulate(AdaptiveLimit(ceiling), 20_000, latency=0.1)
    limit = AdaptiveLimit(ceiling)
    noisy = simulate(limit, 20_000, latency=0.1, background=0.02)
    assert noisy.rejected > 0.015 * noisy.requests  # the background did happen
    assert limit.verdict == "noise"
    assert (limit.current, limit.rejections) == (ceiling, noisy.rejected)
    assert noisy.mean_limit >= 0.95 * ceiling
    assert noisy.rate >= 0.9 * clean.rate, (noisy.rate, clean.rate)


def test_a_storm_of_rejections_keeps_the_full_concurrency():
    """30 % of answers rejected whatever the load: called noise within the start-up burst."""
    limit = AdaptiveLimit(64)
    run = simulate(limit, 5000, latency=0.05, background=0.3)
    assert run.rejected > 0.25 * run.requests
    assert limit.verdict == "noise" and limit.current == 64
    assert run.mean_limit >= 0.95 * 64


def test_a_cap_is_found_through_background_rejections():
    """A cap of 12 and 2 % background rejections: < 5 % rejected, the cap is named, and the
    throughput stays >= 0.9 x that of the same cap without them."""
    clean = simulate(AdaptiveLimit(ceiling=48), 3000, latency=0.02, cap=12)
    limit = AdaptiveLimit(ceiling=48)
    run = simulate(limit, 3000, latency=0.02, cap=12, background=0.02)
    assert run.rejected < 0.05 * run.requests
    assert limit.conclusion.startswith("cap≈12: ")
    assert run.mean_limit <= 12.5
    assert run.rate >= 0.9 * clean.rate, (run.rate, clean.rate)


# --- Pacer ----------------------------------------------------------------------------------


def saturate(
    pacer: Pacer,
    clock: FakeClock,
    until: float,
    draw_cost: Callable[[], float],
    after: Callable[[float], None] | None = None,
) -> tuple[list[float], list[float]]:
    """One caller starting each request the moment the pacer allows, until ``until``:
    the start times and the costs drawn. ``after`` sees each cost once it started."""
    starts: list[float] = []
    costs: list[float] = []
    while clock.now[0] < until:
        cost = draw_cost()
        start = clock.now[0] + pacer.reserve(cost)
        clock.now[0] = start
        starts.append(start)
        costs.append(cost)
        if after is not None:
            after(cost)
    return starts, costs


def interval_for(per_minute: float) -> float:
    return 60.0 / (per_minute * Pacer.HEADROOM)


def test_the_first_start_is_immediate_and_a_backlog_is_spaced_evenly_with_no_burst():
    clock = FakeClock(1000.0)
    pacer = Pacer(per_minute=120, clock=clock)
    delays = [pacer.reserve() for _ in range(10)]  # ten requests waiting at once
    step = interval_for(120)
    assert delays[0] == 0.0
    assert delays == pytest.approx([i * step for i in range(10)])
    assert delays[1] > 0.5 - 1e-9  # never two starts together


def test_an_idle_period_earns_no_burst_afterwards():
    clock = FakeClock()
    pacer = Pacer(per_minute=60, clock=clock)
    assert pacer.reserve() == 0.0
    clock.now[0] = 600.0  # ten idle minutes
    delays = [pacer.reserve() for _ in range(4)]
    assert delays == pytest.approx(
        [0.0, 1 * interval_for(60), 2 * interval_for(60), 3 * interval_for(60)]
    )


@pytest.mark.parametrize("per_minute", [1, 7, 50, 60, 600, 3000])
def test_a_saturated_pacer_never_exceeds_the_cap_in_any_window_and_uses_at_least_95_percent(
    per_minute,
):
    clock = FakeClock()
    pacer = Pacer(per_minute=per_minute, clock=clock)
    starts: list[float] = []
    minutes = 10
    while clock.now[0] < minutes * 60:
        start = clock.now[0] + pacer.reserve()
        clock.now[0] = start  # the caller sleeps until its start
        starts.append(start)
    starts = [s for s in starts if s < minutes * 60]
    assert max_in_window(starts) <= per_minute
    assert len(starts) >= 0.95 * per_minute * minutes


def test_many_workers_with_varied_latency_stay_under_the_rpm_cap_and_near_it():
    """16 workers, each reserving when its last request ends: the cap holds, ≥ 95% is used."""
    per_minute = 300
    rng = random.Random(3)
    clock = FakeClock()
    pacer = Pacer(per_minute=per_minute, clock=clock)
    horizon = 20 * 60.0
    ready = [(rng.uniform(0, 0.5), worker) for worker in range(16)]
    heapq.heapify(ready)
    starts: list[float] = []
    while ready:
        when, worker = heapq.heappop(ready)
        clock.now[0] = when
        start = when + pacer.reserve()
        if start >= horizon:
            continue
        starts.append(start)
        heapq.heappush(ready, (start + rng.uniform(0.05, 3.0), worker))
    assert max_in_window(starts) <= per_minute
    assert len(starts) >= 0.95 * per_minute * horizon / 60


def test_token_reservations_keep_every_window_under_the_tpm_cap():
    per_minute = 100_000
    rng = random.Random(11)
    clock = FakeClock()
    pacer = Pacer(per_minute=per_minute, clock=clock)
    # each request is at most 2% of the cap
    starts, costs = saturate(pacer, clock, 600, lambda: rng.randint(50, 2000))
    assert max_in_window(starts, costs) <= per_minute
    assert sum(costs) >= 0.95 * per_minute * 10


def test_adjust_moves_the_next_start_by_the_difference_between_real_and_estimated_tokens():
    clock = FakeClock()
    step = interval_for(6000)
    pacer = Pacer(per_minute=6000, clock=clock)
    assert pacer.reserve(100) == 0.0
    pacer.adjust(-40)  # the request used 60 tokens, not the 100 estimated
    assert pacer.reserve(10) == pytest.approx(60 * step)
    pacer.adjust(+90)  # this one used 100, not 10
    assert pacer.reserve(1) == pytest.approx(160 * step)


def test_adjust_never_lets_credit_pile_up_into_a_burst():
    clock = FakeClock(50.0)
    pacer = Pacer(per_minute=600, clock=clock)
    pacer.reserve(5)
    pacer.adjust(-100_000)  # a wildly high estimate
    assert pacer.reserve() == 0.0
    assert pacer.reserve() == pytest.approx(interval_for(600))


def test_adjust_before_any_reservation_does_nothing():
    pacer = Pacer(per_minute=60, clock=FakeClock())
    pacer.adjust(500)
    assert pacer.reserve() == 0.0


def test_wait_sleeps_for_the_reserved_delay():
    pacer = Pacer(per_minute=3000)  # about 20 ms apart, with the real clock

    async def main() -> float:
        started = time.monotonic()
        for _ in range(4):
            await pacer.wait()
        return time.monotonic() - started

    elapsed = anyio.run(main)
    assert elapsed >= 3 * interval_for(3000) * 0.9  # a lower bound: load only adds to it


# --- Backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 5, 8])
def test_backoff_is_full_jitter_between_zero_and_the_exponential_ceiling(attempt):
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(attempt))
    ceiling = min(60.0, 2.0**attempt)
    delays = [backoff.delay(attempt) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range (not "half fixed, half random").
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.08)


@pytest.mark.parametrize("attempt", [6, 7, 10, 31, 1000])
def test_backoff_never_exceeds_the_cap(attempt):
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(1))
    delays = [backoff.delay(attempt) for _ in range(500)]
    assert max(delays) <= 60.0
    assert max(delays) > 50.0


def test_backoff_scales_with_the_base():
    backoff = Backoff(base=0.25, cap=60.0, rng=random.Random(2))
    assert max(backoff.delay(2) for _ in range(500)) <= 1.0


def test_backoff_is_reproducible_with_a_seeded_random():
    first = Backoff(rng=random.Random(42))
    second = Backoff(rng=random.Random(42))
    assert [first.delay(a) for a in range(10)] == [second.delay(a) for a in range(10)]


def test_backoff_honours_retry_after_as_a_minimum():
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(5))
    assert all(backoff.delay(0, retry_after=30.0) == 30.0 for _ in range(100))
    # A server asking for more than the cap is still obeyed.
    assert backoff.delay(3, retry_after=120.0) == 120.0
    # A short Retry-After does not shorten the jittered wait below itself.
    delays = [backoff.delay(5, retry_after=0.5) for _ in range(500)]
    assert all(0.5 <= d <= 32.0 for d in delays)
    assert max(delays) > 16.0


@pytest.mark.parametrize("largest", [0.05, 0.3, 0.6])
def test_requests_that_are_a_large_share_of_the_tpm_cap_still_fit_every_window(largest):
    """Spacing alone would let a window hold the cap plus one request; the window log stops it."""
    per_minute = 10_000
    rng = random.Random(5)
    clock = FakeClock()
    pacer = Pacer(per_minute=per_minute, clock=clock)

    def after(cost: float) -> None:
        if rng.random() < 0.3:
            pacer.adjust(-cost * rng.random())  # real usage below the estimate

    def draw() -> float:
        return rng.randint(1, int(largest * per_minute))

    starts, costs = saturate(pacer, clock, 1200, draw, after)
    assert max_in_window(starts, costs) <= per_minute
    assert sum(costs) >= 0.5 * per_minute * 20  # and the cap is still put to use


def test_a_single_request_dearer_than_the_cap_goes_alone():
    clock = FakeClock()
    pacer = Pacer(per_minute=1000, clock=clock)
    assert pacer.reserve(100) == 0.0
    clock.now[0] = 1.0
    assert pacer.reserve(5000) == pytest.approx(59.0, abs=0.01)  # waits for the window to empty


# --- Backoff: every wait is bounded -----------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "attempt", "retry_after"),
    [
        (Backoff(), 0, 99999999.0),  # a Retry-After of three years
        (Backoff(), 2, math.inf),
        (Backoff(base=1.0, cap=math.inf), 10**9, None),  # an exponent past any float
        (Backoff(base=1e308, cap=math.inf), 40, None),  # base * 2**30 overflows to inf
        (Backoff(base=math.inf, cap=math.inf), 3, 5.0),
        (Backoff(base=1.0, cap=math.nan), 12, None),
    ],
)
def test_no_wait_is_longer_than_the_longest_whatever_asks_for_it(backoff, attempt, retry_after):
    delays = [backoff.delay(attempt, retry_after) for _ in range(50)]
    assert all(0.0 <= d <= backoff.longest for d in delays), delays
    assert backoff.longest == 600.0


@pytest.mark.parametrize(
    ("backoff", "attempt", "retry_after"),
    [
        (Backoff(), 0, 99999999.0),
        (Backoff(), 1, 30.0),
        (Backoff(base=1.0, cap=60.0), 8, None),  # jitter up to 60 s
        (Backoff(base=1.0, cap=math.inf), 10**6, math.inf),
    ],
)
def test_no_wait_is_longer_than_the_time_the_caller_has_left(backoff, attempt, retry_after):
    for remaining in (5.0, 0.25, 0.0, -3.0):
        delays = [backoff.delay(attempt, retry_after, remaining=remaining) for _ in range(50)]
        assert all(0.0 <= d <= max(0.0, remaining) for d in delays), (remaining, delays)


def test_a_budget_larger_than_the_wait_changes_nothing():
    first = Backoff(rng=random.Random(3))
    second = Backoff(rng=random.Random(3))
    plain = [first.delay(a, retry_after=2.0 if a % 3 == 0 else None) for a in range(12)]
    budgeted = [second.delay(a, 2.0 if a % 3 == 0 else None, remaining=1e6) for a in range(12)]
    assert plain == budgeted


def test_a_retry_after_that_is_not_a_number_leaves_the_jittered_wait():
    backoff = Backoff(base=1.0, cap=4.0, rng=random.Random(9))
    delays = [backoff.delay(2, math.nan) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) > 3.0


# --- QuotaPause: --wait-for-quota ------------------------------------------------------------

NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def quota_clock() -> FakeClock:
    return FakeClock(NOON.timestamp())


def test_a_reset_in_the_future_is_waited_for():
    clock = quota_clock()
    pause = QuotaPause(clock=clock)
    assert pause.pause(NOON + dt.timedelta(minutes=20)) == pytest.approx(1200.0)


def test_past_the_named_reset_the_pauses_double_up_to_the_cap():
    clock = quota_clock()
    pause = QuotaPause(first=1.0, cap=60.0, patience=3600.0, clock=clock)
    passed = NOON - dt.timedelta(minutes=5)
    waits = []
    for _ in range(10):
        wait = pause.pause(passed)
        assert wait is not None
        waits.append(wait)
        clock.now[0] += wait
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize(
    "reset",
    [
        None,  # the quota answer named no reset
        NOON - dt.timedelta(hours=3),  # a named reset that has passed
        NOON + dt.timedelta(minutes=10),  # one that comes, but the quota stays exhausted
    ],
)
def test_a_quota_that_stays_exhausted_is_probed_a_bounded_number_of_times(reset):
    """Each pause ends with a probe that finds the quota still exhausted; the stretch ends
    (None: stop, exit 4) within the patience, after a handful of probes, not one a second."""
    clock = quota_clock()
    pause = QuotaPause(first=1.0, cap=300.0, patience=3600.0, clock=clock)
    probes = 0
    while (wait := pause.pause(reset)) is not None:
        assert wait > 0
        clock.now[0] += wait
        probes += 1
        assert probes < 100
    assert clock() - NOON.timestamp() <= 3600.0
    assert probes <= 22  # 1 + 2 + ... + 256 = 511 s, then 300 s pauses: 9 + 10 + one reset wait


def test_a_reset_further_away_than_the_patience_stops_at_once():
    pause = QuotaPause(patience=3600.0, clock=quota_clock())
    assert pause.pause(NOON + dt.timedelta(hours=5)) is None


def test_a_success_starts_a_new_stretch():
    clock = quota_clock()
    pause = QuotaPause(first=1.0, cap=60.0, patience=100.0, clock=clock)
    assert not pause.exhausted
    for _ in range(6):  # 1 + 2 + 4 + 8 + 16 + 32 = 63 s
        clock.now[0] += pause.pause(None) or 0.0
    assert pause.exhausted
    assert pause.pause(None) is None  # 60 more would end at 123 s > 100 s
    pause.clear()
    assert not pause.exhausted
    assert pause.pause(None) == 1.0


@pytest.mark.parametrize("value", [0.0, -5.0, math.inf, math.nan])
def test_the_quota_wait_must_be_a_positive_finite_number(value):
    with pytest.raises(JobError, match=r"limits\.quota_wait_seconds"):
        Job(input_path="in.jsonl", output_dir="out", quota_wait_seconds=value)
