"""Unit tests of the unattended-run rules: the down detector, the first-rows verdict, the
hedging threshold, the budget's admission control, and the journal's frames."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import anyio
import pytest

from zbatch.budget import Budget, Spend
from zbatch.limits import AdaptiveLimit
from zbatch.online.health import DownDetector, FirstRows, Held
from zbatch.online.hedge import Hedger, Latencies
from zbatch.outcome import Failure, Scope, Success
from zbatch.pipeline import Work
from zbatch.pricing import Price
from zbatch.stats import Stats
from zbatch.store import OutputDir, Storage
from zbatch.store.journal import Journal, _frame, read_frames


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REFUSED = Failure("connection", Scope.RETRY, "ConnectError: connection refused")
UNAVAILABLE = Failure("server_error", Scope.RETRY, "Service Unavailable", 503)
BUSY = Failure("rate_limited", Scope.SLOW_DOWN, "busy", 429, "1302")
NO_MODEL = Failure("bad_request", Scope.ROW, "The model does not exist", 400, "1211")


def test_down_detector_trips_only_after_down_after_of_nothing_but_down_failures() -> None:
    clock = FakeClock()
    down = DownDetector(300, clock=clock)
    down.observe(REFUSED)
    clock.now += 299
    down.observe(UNAVAILABLE)
    assert down.down_for is None
    clock.now += 2
    assert down.down_for == 301
    assert down.last_failure is UNAVAILABLE


def test_one_answer_of_any_other_kind_resets_the_down_clock() -> None:
    clock = FakeClock()
    down = DownDetector(10, clock=clock)
    down.observe(REFUSED)
    clock.now += 9
    down.observe(BUSY)  # a 429 is an answer: the endpoint is alive
    clock.now += 9
    down.observe(REFUSED)
    assert down.down_for is None
    clock.now += 2
    assert down.down_for == 11
    down.alive()  # a success
    assert down.down_for is None


def test_a_slow_endpoint_with_no_failure_never_looks_down() -> None:
    clock = FakeClock()
    down = DownDetector(1, clock=clock)
    clock.now += 3600  # attempts still running, none failed
    assert down.down_for is None


def held(failure: Failure, row: int) -> Held:
    return Held(f"r{row}", failure, 1, None)


def test_first_rows_failing_alike_give_a_verdict_naming_code_and_setting() -> None:
    first = FirstRows(limit=3)
    assert first.take(held(NO_MODEL, 0)) and first.take(held(NO_MODEL, 1))
    assert first.verdict is None
    assert first.take(held(NO_MODEL, 2))
    assert first.verdict is not None
    assert "1211" in first.verdict and "request.model" in first.verdict
    assert [h.row_id for h in first.release()] == ["r0", "r1", "r2"]
    assert first.take(held(NO_MODEL, 3))  # later rows like them: not their fault either


def test_a_different_failure_or_a_success_ends_the_first_rows_watch() -> None:
    first = FirstRows(limit=3)
    assert first.take(held(NO_MODEL, 0))
    other = Failure("bad_request", Scope.ROW, "bad parameter", 400, "1214")
    assert not first.take(held(other, 1))
    assert [h.row_id for h in first.release()] == ["r0"]  # the caller logs them now
    assert not first.take(held(NO_MODEL, 2))  # no longer deciding
    assert first.verdict is None


def test_labels_never_valid_is_a_verdict_too() -> None:
    first = FirstRows(limit=2)
    invalid = Failure("invalid_label", Scope.ROW, "answer 'maybe' is not one of the choices")
    first.take(held(invalid, 0))
    first.take(held(invalid, 1))
    assert first.verdict is not None and "labels.choices" in first.verdict


def test_transient_failures_are_never_held() -> None:
    first = FirstRows(limit=2)
    assert not first.take(held(UNAVAILABLE, 0))


def test_hedge_threshold_is_max_of_five_p50_and_p99_and_never_under_a_second() -> None:
    latencies = Latencies(minimum=20)
    for _ in range(19):
        latencies.add(0.4)
    assert latencies.hedge_after() is None  # too few answers to know the usual latency
    latencies.add(0.4)
    assert latencies.hedge_after() == 2.0
    for _ in range(80):
        latencies.add(0.4)
    for _ in range(3):
        latencies.add(3.0)  # a tail past five times the median
    assert latencies.hedge_after() == 3.0
    fast = Latencies(minimum=1)
    fast.add(0.01)
    assert fast.hedge_after() == 1.0  # a fast endpoint: scheduling jitter is not a stuck attempt


def answer_of(content: str) -> Success:
    return Success(content, None, "stop", "m", 1, 1, 2, None, content, 10)


class StuckFirstClient:
    """The first attempt never answers; every later one answers at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, body: bytes) -> Success:
        self.sent += 1
        if self.sent == 1:
            await anyio.sleep_forever()
        return answer_of(f"attempt {self.sent}")


def hedger_with(client: StuckFirstClient, answered: int) -> Hedger:
    hedger = Hedger(client, AdaptiveLimit(4), Stats())  # type: ignore[arg-type]
    for _ in range(answered):
        hedger.latencies.add(0.01)  # hedge after the floor of a second
    return hedger


WORK = Work("row-1", b"{}", 10, ())


def test_a_stuck_attempt_gets_its_hedges_answer_and_the_hedge_is_paid_for_twice() -> None:
    """Once the input is used up the stuck attempt is sent again; the hedge's answer ends
    the first attempt, and is what both attempts are billed at."""
    client = StuckFirstClient()
    hedger = hedger_with(client, answered=20)

    async def main() -> tuple[object, object]:
        async with anyio.create_task_group() as helpers:
            done = anyio.Event()
            done.set()
            helpers.start_soon(hedger.run, done, helpers, lambda: False)
            outcome, twin = await hedger.send(WORK)
            helpers.cancel_scope.cancel()
        return outcome, twin

    outcome, twin = anyio.run(main)
    assert outcome == answer_of("attempt 2") and twin is outcome
    assert client.sent == 2 and not hedger._attempts


def test_a_stop_still_cancels_an_attempt_that_could_be_hedged() -> None:
    """The cancellation of a run's stop passes through the attempt's hedge handle: the
    attempt ends with the stop, not with an answer."""
    client = StuckFirstClient()
    hedger = hedger_with(client, answered=0)
    got: list[object] = []

    async def main() -> bool:
        with anyio.move_on_after(0.05) as scope:
            got.append(await hedger.send(WORK))
        return scope.cancelled_caught

    assert anyio.run(main) is True
    assert got == [] and client.sent == 1 and not hedger._attempts


PRICE = Price(input=1000.0, cached=1000.0, output=2000.0)  # USD per 1M tokens


class Answer:
    """The usage fields of an answer, as billing reads them."""

    def __init__(self, *, prompt: int, completion: int, cached: int | None = None) -> None:
        self.prompt_tokens = prompt
        self.completion_tokens = completion
        self.cached_tokens = cached
        self.usage_malformed = False


def test_budget_admits_while_spend_plus_in_flight_worst_cases_fit() -> None:
    budget = Budget(max_cost=1.0, price=PRICE, spent=0.5)
    # (100 + 32 template tokens) * 1000/1e6 + 50 * 2000/1e6
    worst = budget.worst_case(100, 50)
    assert worst == pytest.approx(0.232)
    first = anyio.run(budget.admit, 100, 50)
    second = anyio.run(budget.admit, 100, 50)
    assert first is not None and second is not None and first.usd == second.usd == worst
    assert anyio.run(budget.admit, 100, 50) is None  # 0.5 + 2 * 0.232 + 0.232 > 1.0
    budget.release(first)
    assert budget.charge(Answer(prompt=10, completion=0), first) == pytest.approx(0.01)
    assert anyio.run(budget.admit, 100, 50) is not None  # 0.51 + 2 * 0.232 <= 1.0
    assert "spent $0.5100 of $1.0000" in budget.message()
    assert "--max-cost" in budget.message()


def test_without_max_tokens_the_budget_assumes_a_bounded_answer() -> None:
    budget = Budget(max_cost=None, price=PRICE, spent=0)
    assert budget.worst_case(0, 0) == (32 * 1000 + 4096 * 2000) / 1e6
    assert anyio.run(budget.admit, 10**9, 10**9) is not None  # no limit: always admitted


def test_spend_of_an_answer_counts_cached_tokens_at_their_price() -> None:
    answer = Answer(prompt=1000, completion=100, cached=400)
    usd = Budget(max_cost=None, price=Price(1.0, 0.5, 2.0), spent=0).charge(answer)
    assert usd == (600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1e6
    spend = Spend()
    spend.count(answer, usd)
    assert spend.usd == usd
    assert (spend.prompt_tokens, spend.cached_tokens, spend.answers) == (1000, 400, 1)


def test_journal_frames_end_at_a_torn_or_damaged_tail(tmp_path: Path) -> None:
    good = _frame(3, b'{"usd": 1}') + _frame(1, b"abc")
    path = tmp_path / "x.journal"
    path.write_bytes(good + _frame(1, b"torn frame")[:-3])
    assert list(read_frames(path)) == [(3, b'{"usd": 1}'), (1, b"abc")]
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF  # a flipped bit in the last payload
    path.write_bytes(bytes(damaged))
    assert list(read_frames(path)) == [(3, b'{"usd": 1}')]


def test_shards_keep_their_own_ledgers_and_the_total_adds_them_up(tmp_path: Path) -> None:
    """Shards of one job run at once: each writes its own ledger, never one shared file."""
    outdir = OutputDir(str(tmp_path))
    assert outdir.total_spend() is None
    outdir.write_spend(Spend(usd=0.5, answers=1, journals=["a-00000.journal"]))
    outdir.write_spend(Spend(usd=1.0, answers=2), "0of2")
    outdir.write_spend(Spend(usd=2.0, answers=4, journals=["b-1of2-00003.journal"]), "1of2")
    assert sorted(p.name for p in tmp_path.glob("spend*.json")) == [
        "spend-0of2.json",
        "spend-1of2.json",
        "spend.json",
    ]
    total = outdir.total_spend()
    assert total is not None
    assert (total.usd, total.answers) == (3.5, 7)
    assert sorted(total.journals) == ["a-00000.journal", "b-1of2-00003.journal"]
    assert outdir.read_spend("0of2").usd == 1.0


def test_an_outdir_not_on_a_local_disk_keeps_its_journal_in_a_local_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Object storage has no append: the journal goes to a local folder named after the URL
    and a token the OUTDIR keeps, so an OUTDIR made again under the same URL gets a new one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    class Remote:  # stands for an object-storage backend: a dict of objects
        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}

        def read_bytes(self, name: str) -> bytes | None:
            return self.objects.get(name)

        def create(self, name: str, write: Callable[[BinaryIO], None]) -> None:
            buffer = io.BytesIO()
            write(buffer)
            self.objects[name] = buffer.getvalue()

    local = OutputDir(str(tmp_path / "out"))
    assert local.journal_folder() == tmp_path / "out" / "journal"
    bucket = Remote()
    remote = OutputDir("s3://bucket/out", storage=cast(Storage, bucket))
    folder = remote.journal_folder()
    assert folder.parent == tmp_path / "cache" / "zbatch" / "journal"
    assert remote.journal_folder() == folder  # the same OUTDIR, the same folder
    made_again = OutputDir("s3://bucket/out", storage=cast(Storage, Remote()))
    assert made_again.journal_folder() != folder
    assert OutputDir("s3://bucket/other", storage=cast(Storage, bucket)).journal_folder() != folder


def test_the_budget_takes_in_what_other_shards_spent_at_each_part_commit(tmp_path: Path) -> None:
    """After its part commit a shard's spend so far is every ledger plus its own unsettled
    spend, so shards running at once spend from one budget."""
    outdir = OutputDir(str(tmp_path))
    outdir.write_spend(Spend(usd=2.0, answers=4), "1of2")  # the other shard, as of its commit
    journal = Journal(
        None,
        "run-0of2",
        {},
        ledger=outdir.read_spend("0of2"),
        save_ledger=lambda spend: outdir.write_spend(spend, "0of2"),
        read_total=outdir.total_spend,
    )

    async def commit_then_spend() -> tuple[float, float]:
        journal.charge(Answer(prompt=10, completion=1), 0.5)
        journal.seal()
        await journal.settle()  # this shard's 0.5 is now in its ledger
        journal.charge(Answer(prompt=10, completion=1), 0.25)  # and this is not yet
        before = await journal.spent()
        outdir.write_spend(Spend(usd=3.0, answers=6), "1of2")  # the other shard commits again
        return before, await journal.spent()

    assert anyio.run(commit_then_spend) == (2.75, 3.75)
    assert outdir.read_spend("0of2").usd == 0.5
