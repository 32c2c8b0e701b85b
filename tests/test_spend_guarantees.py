"""Never overspend, never pay twice by surprise (issue 20, cases 5 and 8): a budget binds for
the OUTDIR across every writer (shards at once, batch mode, cluster tasks), an answer without
usable usage is charged its worst case, hedging is opt-in and blind to a busy client.

Real processes against tests/zai_server.py and tests/batch_server.py. Spend is checked twice:
from the OUTDIR (the ledger `status` reads) and from what the server answered, priced here."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from batch_server import BatchServer
from conftest import (
    TEST_KEY,
    input_and_outdir,
    prompt_rows,
    read_table,
    run_against,
    run_zbatch,
    start_zbatch,
    write_jsonl,
    zbatch_env,
)
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import ZaiServer, answer_for

from zbatch.budget import LEASE_SECONDS, TEMPLATE_TOKENS, Budget, Reservations
from zbatch.limits import AdaptiveLimit
from zbatch.online.hedge import Hedger
from zbatch.outcome import Success
from zbatch.pipeline import Work
from zbatch.pricing import Price
from zbatch.stats import Stats
from zbatch.store.storage import LocalStorage

MAX_TOKENS = 10
PRICE = Price(1000.0, 1000.0, 1000.0)  # USD per 1M tokens: $0.001 a token
PRICED = f"""
[request]
max_tokens = {MAX_TOKENS}

[prices]
"glm-4.6" = {{ input = 1000.0, output = 1000.0 }}
"""


def priced_job(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "priced.toml"
    path.write_text(PRICED + extra, encoding="utf-8")
    return str(path)


def tokens(text: str) -> int:
    return max(1, len(text) // 4)  # how the loopback server counts usage


def paid(prompts: list[str], factor: float = 1.0) -> float:
    """What the server's answers to ``prompts`` cost, from their own usage."""
    total = 0
    for prompt in prompts:
        total += tokens(prompt) + tokens(answer_for([{"role": "user", "content": prompt}]))
    return total * 0.001 * factor


def worst(prompt: str, factor: float = 1.0) -> float:
    """A request's worst case as zbatch must reserve it: estimate + template + max_tokens."""
    return (tokens(prompt) + TEMPLATE_TOKENS + MAX_TOKENS) * 0.001 * factor


def assert_no_key_written(out: Path) -> None:
    """The API key is in no file of the OUTDIR (the budget's snapshots and the batch records
    included)."""
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "budget" for p in written)
    for path in written:
        assert TEST_KEY.encode() not in path.read_bytes(), path


def status_of(out: Path) -> dict[str, Any]:
    proc = run_zbatch("status", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def writers_stopped_by_the_budget(procs: list[Any], srv: ZaiServer) -> list[str]:
    """Wait for writers started at once: some stop on the budget (exit 5), none fails, and
    none bought a prompt another had bought; the prompts answered."""
    codes = []
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        codes.append(proc.returncode)
        assert "Traceback" not in err, err
    assert 5 in codes and set(codes) <= {0, 5}, codes
    answered: list[str] = srv.stats()["answered_prompts"]
    assert max(Counter(answered).values()) == 1
    return answered


def shard_args(job: str, inp: Path, out: Path, k: int, budget: float, url: str) -> list[str]:
    return ["run", job, "-i", str(inp), "-o", str(out), "-c", "4", "--shard", f"{k}/3",
            "--max-cost", f"{budget}", "--base-url", url]  # fmt: skip


def test_three_shards_at_once_spend_within_one_budget_for_the_outdir(tmp_path: Path) -> None:
    """Three shards start together on one OUTDIR with room for about 40 of 150 rows: their
    spend together stays within the budget (each used to spend it on its own)."""
    rows = prompt_rows(150)
    inp, out = input_and_outdir(tmp_path, rows)
    job = priced_job(tmp_path)
    budget = 40 * paid([rows[0]["prompt"]])
    with ZaiServer(latency=0.05) as srv:
        procs = [
            start_zbatch(*shard_args(job, inp, out, k, budget, srv.base_url)) for k in range(3)
        ]
        answered = writers_stopped_by_the_budget(procs, srv)
    bought = paid(answered)
    spent = status_of(out)["cost_usd"]
    assert spent == pytest.approx(bought, abs=1e-6)
    assert 0 < spent <= budget, (spent, budget)
    # Every reservation is gone once the writers stopped: status shows none in flight.
    assert status_of(out)["reserved"]["writers"] == 0
    ids = read_table(out / "results").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == len(answered)
    assert_no_key_written(out)


@pytest.mark.parametrize("fault", ["nousage", "nanusage"])
def test_answers_without_usable_usage_are_charged_their_worst_case(
    tmp_path: Path, fault: str
) -> None:
    """Every answer comes without usage (or with NaN counts): each is charged its worst case,
    so the budget stops the run after about budget / worst-case answers, not never."""
    rows = prompt_rows(200)
    inp, out = input_and_outdir(tmp_path, rows)
    budget = 20 * worst(rows[0]["prompt"])
    with ZaiServer(rates={fault: 1.0}) as srv:
        proc = run_against(
            srv, priced_job(tmp_path), "-i", str(inp), "-o", str(out), "-c", "4",
            "--max-cost", f"{budget}", expect=5,
        )  # fmt: skip
        answered = srv.stats()["answered_prompts"]
    summary = json.loads((out / "summary.json").read_text())
    charged = summary["answers_charged_worst_case"]
    assert charged["answers"] == len(answered) > 0
    assert charged["usd"] == pytest.approx(sum(worst(p) for p in answered), rel=1e-6)
    assert len(answered) <= 20  # budget / worst case: never more
    assert summary["spent_usd_all_runs"] == status_of(out)["cost_usd"]
    assert status_of(out)["cost_usd"] == pytest.approx(charged["usd"], abs=1e-6)
    assert "no usable usage" in proc.stdout
    # The rows are done all the same, holding their own answers.
    table = read_table(out / "results")
    for row_id, content in zip(
        *(table.column(c).to_pylist() for c in ("id", "content")), strict=True
    ):
        prompt = rows[int(row_id[3:])]["prompt"]
        assert content == answer_for([{"role": "user", "content": prompt}])


def batch_run(srv: BatchServer, tmp_path: Path, *args: str) -> Any:
    return run_zbatch(
        "run", priced_job(tmp_path), "-i", str(tmp_path / "in.jsonl"), "-o",
        str(tmp_path / "out"), "--base-url", srv.base_url, "--mode", "batch",
        "--poll-seconds", "0.01", "--backoff-base", "0.01", *args,
    )  # fmt: skip


def test_batch_mode_submits_only_what_fits_the_budget_and_exits_5(tmp_path: Path) -> None:
    rows = prompt_rows(60)
    write_jsonl(tmp_path / "in.jsonl", rows)
    half = 0.5  # batch_discount
    budget = 25 * worst(rows[0]["prompt"], half)
    out = tmp_path / "out"
    with BatchServer() as srv:
        proc = batch_run(srv, tmp_path, "--max-cost", f"{budget}")
        assert proc.returncode == 5, proc.stderr
        submitted = sorted(srv.submitted)
        assert 0 < len(submitted) <= 25 and max(srv.submitted.values()) == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert "rows were not submitted" in last and "--max-cost" in last, last
        assert "Traceback" not in proc.stderr
        prompts = {r["id"]: r["prompt"] for r in rows}
        bought = paid([prompts[i] for i in submitted], half)
        status = status_of(out)
        assert status["cost_usd"] == pytest.approx(bought, abs=1e-6)
        assert 0 < status["cost_usd"] <= budget
        summary = json.loads((out / "summary.json").read_text())
        assert summary["spent_usd_all_runs"] == status["cost_usd"]
        assert status["reserved"]["batches_usd"] == 0  # collected: nothing held any more
        assert_no_key_written(out)
        # A larger budget submits the rest, each row once.
        more = batch_run(srv, tmp_path, "--max-cost", "10")
        assert more.returncode == 0, more.stderr
        assert sorted(srv.submitted) == sorted(prompts) and max(srv.submitted.values()) == 1
    assert status_of(out)["cost_usd"] == pytest.approx(paid(list(prompts.values()), half))


def test_a_cluster_run_spends_within_the_budget_and_its_summary_agrees_with_status(
    tmp_path: Path,
) -> None:
    rows = prompt_rows(120)
    inp, out = input_and_outdir(tmp_path, rows)
    budget = 40 * paid([rows[0]["prompt"]])  # a third of the rows
    with ZaiServer(latency=0.02) as srv:
        proc = run_against(
            srv, priced_job(tmp_path), "-i", str(inp), "-o", str(out), "-c", "8",
            "--cluster", "local:2", "--max-cost", f"{budget}", expect=5, timeout=240,
        )  # fmt: skip
        answered = srv.stats()["answered_prompts"]
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = status_of(out)
    assert summary["spent_usd_all_runs"] == status["cost_usd"]
    assert status["cost_usd"] == pytest.approx(paid(answered), abs=1e-6)
    assert 0 < status["cost_usd"] <= budget


def test_hedging_is_off_unless_asked_for(tmp_path: Path) -> None:
    rows = prompt_rows(30)
    rows[-1]["prompt"] = "the stuck one FAIL=slow"
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01, slow_seconds=1.5) as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "4")
        assert srv.stats()["requests"] == 30
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hedged_requests"] == 0 and summary["hedged_usd"] == 0


def test_hedged_spend_is_counted_and_shown(tmp_path: Path) -> None:
    rows = prompt_rows(60)
    rows[-1]["prompt"] = "the stuck one FAIL=slow"
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01, slow_seconds=30) as srv:
        proc = run_against(
            srv, priced_job(tmp_path), "-i", str(inp), "-o", str(out), "-c", "4", "--hedge",
            timeout=120,
        )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hedged_requests"] >= 1
    assert summary["hedged_usd"] == pytest.approx(paid(["the stuck one FAIL=slow"]), abs=1e-6)
    assert "paid twice" in proc.stdout


class SlowOnceClient:
    """Answers every attempt after ``seconds``; the endpoint itself is never slow."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sent = 0

    async def send(self, body: bytes) -> Success:
        self.sent += 1
        await anyio.sleep(self.seconds)
        return Success("ok", None, "stop", "m", 1, 1, 2, None, None, 10)


def test_a_busy_client_does_not_hedge() -> None:
    """The client's loop stalls 1.5 s (a CPU-bound stretch) while an attempt the endpoint
    answers in 0.2 s waits: the stall is not the endpoint's slowness, so no hedge is sent
    (the attempt looks 1.7 s old, past the 1 s floor)."""
    client = SlowOnceClient(0.2)
    hedger = Hedger(client, AdaptiveLimit(4), Stats())  # type: ignore[arg-type]
    for _ in range(20):
        hedger.latencies.add(0.01)

    async def main() -> None:
        async with anyio.create_task_group() as helpers:
            done = anyio.Event()
            done.set()
            helpers.start_soon(hedger.run, done, helpers, lambda: False)
            await anyio.sleep(0.2)  # the hedger measures its wake-ups from the start

            async def stall() -> None:
                await anyio.sleep(0.05)
                time.sleep(1.5)  # the stall this test is about

            helpers.start_soon(stall)
            await hedger.send(Work("row-1", b"{}", 10, ()))
            await anyio.sleep(0.3)  # the hedger's rounds after the stall
            helpers.cancel_scope.cancel()

    anyio.run(main)
    assert client.sent == 1 and hedger.stalled >= 1.0


def test_the_worst_case_learns_from_billed_prompt_tokens() -> None:
    """A provider that bills three times the estimate (a long system template): after one
    answer the worst case of the next request scales with it."""
    budget = Budget(max_cost=10.0, price=PRICE, spent=0.0)
    hold = anyio.run(budget.admit, 100, 0)
    assert hold is not None and budget.prompt_bound(100) == 100 + TEMPLATE_TOKENS

    class Answer:
        prompt_tokens, completion_tokens, cached_tokens, usage_malformed = 396, 5, None, False

    budget.release(hold)
    budget.charge(Answer(), hold)
    assert budget.prompt_bound(100) == 396


def test_two_shards_on_object_storage_share_one_budget(s3: S3, tmp_path: Path) -> None:
    """The same on an s3:// OUTDIR (moto): the reservations are create-only objects."""
    rows = prompt_rows(80)
    s3.fs().pipe(f"{s3.bucket}/in.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    job, out = priced_job(tmp_path), s3.url("out")
    budget = 25 * paid([rows[0]["prompt"]])
    env = zbatch_env(**s3.env)
    with ZaiServer(latency=0.05) as srv:
        procs = []
        for k in range(2):
            args = ["run", job, "-i", s3.url("in.jsonl"), "-o", out, "-c", "3", "--shard",
                    f"{k}/2", "--max-cost", f"{budget}", "--base-url", srv.base_url]  # fmt: skip
            procs.append(start_zbatch(*args, env=env))
        answered = writers_stopped_by_the_budget(procs, srv)
    proc = run_zbatch("status", out, "--json", env=env)
    status = json.loads(proc.stdout)
    assert status["cost_usd"] == pytest.approx(paid(answered), abs=1e-6)
    assert 0 < status["cost_usd"] <= budget
    assert status["reserved"]["writers"] == 0
    assert s3.fs().ls(f"{s3.bucket}/out/budget", detail=False)


def test_reservations_of_writers_racing_never_pass_the_limit(tmp_path: Path) -> None:
    """Four writers in threads reserve $0.1 at a time against $1.0 on one OUTDIR: exactly ten
    reservations succeed, whoever wins each race (a lost create-only write reads again)."""
    storage = LocalStorage(tmp_path)
    granted: list[str] = []
    lock = threading.Lock()

    def writer(name: str) -> None:
        shared = Reservations(storage, name, lambda: 0.0)
        mine = 0.0
        while (
            block := shared.publish(mine + 0.1, mine + 0.1, 0.0, max_cost=1.0 + 1e-9)
        ) is not None:
            mine = block
            with lock:
                granted.append(name)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 10
    figures = Reservations(storage, "reader", lambda: 0.0).figures()
    assert figures["reserved_usd"] == pytest.approx(1.0)
    assert len(storage.list("budget")) <= 8 + 4  # old snapshots are pruned


def test_a_dead_writers_reservations_lapse_after_the_lease(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    now = [1000.0]
    dead = Reservations(storage, "dead", lambda: 0.25, clock=lambda: now[0])
    assert dead.publish(0.5, 0.5, 0.1, max_cost=1.0) == 0.5  # then kill -9: never renewed
    live = Reservations(storage, "live", lambda: 0.25, clock=lambda: now[0])
    assert live.publish(0.2, 0.2, 0.0, max_cost=1.0) is None  # 0.25 + 0.6 + 0.2 > 1.0
    assert live.used == pytest.approx(0.85) and live.spent == pytest.approx(0.35)
    now[0] += LEASE_SECONDS
    assert live.publish(0.2, 0.2, 0.0, max_cost=1.0) == pytest.approx(0.2)
    assert live.figures() == {"writers": 1, "reserved_usd": 0.2, "unsettled_usd": 0.0}
    live.leave()
    assert live.figures()["writers"] == 0


def test_a_writer_takes_a_block_of_at_most_a_fair_share_and_admits_within_it(
    tmp_path: Path,
) -> None:
    """One write reserves room for many requests; a second writer still finds room left."""
    storage = LocalStorage(tmp_path)
    first = Budget(max_cost=1.0, price=PRICE, spent=0.0, shared=Reservations(storage, "a", float))
    worst = first.worst_case(8, 10)  # (8 + 32 + 10) tokens at $0.001 = $0.05

    async def admit_many(budget: Budget, count: int) -> int:
        admitted = 0
        for _ in range(count):
            admitted += await budget.admit(8, 10) is not None
        return admitted

    assert anyio.run(admit_many, first, 5) == 5
    assert len(storage.list("budget")) == 1  # one block for all five
    # The block: the request, and half of the rest (a fair share beside one more writer).
    assert worst == pytest.approx(0.05)
    assert first.shared is not None and first.shared.used == pytest.approx(0.05 + 0.95 / 2)
    second = Budget(max_cost=1.0, price=PRICE, spent=0.0, shared=Reservations(storage, "b", float))
    # The second gets what the first's block left, 0.475: 9 requests. Together never past
    # the budget: the first then fills its own block, 10 requests of 0.05 in 0.525.
    assert anyio.run(admit_many, second, 100) == 9
    assert anyio.run(admit_many, first, 100) == 10 - 5


def test_spend_moved_into_the_ledger_frees_no_room_in_a_writers_block(tmp_path: Path) -> None:
    """A part commit moves the writer's unsettled spend into its ledger: the block it
    published must still count those answers (it used to free their room again, and one run
    with --part-seconds 2 spent $5.98 against a $5.03 budget)."""
    ledger = [0.0]  # the OUTDIR's spend ledgers, as Reservations reads them
    shared = Reservations(LocalStorage(tmp_path), "a", lambda: ledger[0])
    budget = Budget(max_cost=1.0, price=PRICE, spent=0.0, shared=shared)
    answer = SimpleNamespace(  # billed exactly its worst case: 40 + 10 tokens, $0.05
        prompt_tokens=8 + TEMPLATE_TOKENS, completion_tokens=MAX_TOKENS, cached_tokens=0,
        usage_malformed=False,
    )  # fmt: skip

    async def spend_all() -> int:
        answered = 0
        while (hold := await budget.admit(8, MAX_TOKENS)) is not None and answered < 100:
            budget.release(hold)
            budget.charge(answer, hold)
            answered += 1
            if answered % 3 == 0:  # a part commit: the spend is in the ledger now
                ledger[0] += budget.unsettled
                budget.settled(0.0)
        return answered

    answered = anyio.run(spend_all)
    assert 0.95 - 1e-9 <= ledger[0] + budget.unsettled <= 1.0 + 1e-9, answered  # 19 or 20 of $0.05
