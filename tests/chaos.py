"""Seeded chaos on one OUTDIR: writers of random kinds started, killed -9 and restarted.

    report = run_chaos(workdir, seed=7, rounds=6)      # tests/test_chaos.py, bench/chaos_soak.py
    report.check()                                       # the guarantees, as assertions

Each round starts one to three writers at once, each of a random kind: a whole online run,
shard K of N for a random N (2..4), or a whole run in batch mode. After a random moment each
one still running is killed -9 (or, at random, let finish). Writers whose ids overlap a live
one's are refused (exit 75). Every writer has one ``--max-cost`` for the OUTDIR, room for about
half the rows, so the budget binds during the chaos (writers stop with exit 5). The end is one
batch-mode run with that budget (it collects every open batch; exit 0 or 5), the spend checks,
and one online run with a raised budget (the user's way to finish), to exit 0.

Every online writer talks to a loopback Z.AI server of its own, so the answers it bought are
known exactly; batch writers share one Batch API server, which records every line of every
batch it created. What a kill loses is measured at the kill: the answers that writer bought
(its server's record; for a batch writer, the lines of batches created in its life) that the
OUTDIR does not hold durably (in results/ parts or a journal) once it is dead. The checks:
at every moment no id twice in results/ (read with pyarrow.dataset), at the end each id
exactly once with its own answer, every answer bought twice one that a kill lost, and no
more of them than the kills lost in all. Spend: what the servers answered, priced at the job's
prices (the batch price for batch lines), stays within the budget plus, for each kill, the
worst case (zbatch's own, :meth:`zbatch.budget.Budget.worst_case`) of what the kill lost; and
``status --json``'s cost_usd is that spend less at most what the kills lost.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from batch_server import BatchServer
from conftest import ZBATCH, prompt_rows, read_table, run_zbatch, write_jsonl, zbatch_env
from zai_server import ZaiServer, answer_for

from zbatch.budget import Budget
from zbatch.pricing import Price, cost, discounted
from zbatch.prompt import estimate_tokens
from zbatch.store.journal import read_frames

CONCURRENCY = 4
LATENCY = 0.03
OK_CODES = (0, 5, 75)  # done, stopped by the budget, or refused (an overlapping writer is live)
MAX_TOKENS = 10
PRICE = Price(1000.0, 1000.0, 1000.0)  # USD per 1M tokens: $0.001 a token
BATCH_DISCOUNT = 0.5  # the job's default batch_discount
JOB = f"""
[request]
max_tokens = {MAX_TOKENS}

[prices]
"glm-4.6" = {{ input = {PRICE.input}, output = {PRICE.output} }}
"""
BUDGET_SHARE = 0.7  # the budget: this share of what every row costs once at the live price
RAISED = 1000.0  # the budget of the final run


def price_of(kind: str) -> Price:
    """The job's price for a writer of ``kind``: batch lines at the batch price."""
    if kind != "batch":
        return PRICE
    price = discounted(PRICE, BATCH_DISCOUNT)
    assert price is not None
    return price


def answer_cost(prompt: str, price: Price) -> float:
    """What an answer to ``prompt`` costs, from the usage the loopback servers report."""
    billed = max(1, len(prompt) // 4)
    answer = answer_for([{"role": "user", "content": prompt}])
    return cost(price, billed, 0, max(1, len(answer) // 4)) or 0.0


def worst_case(prompt: str, price: Price) -> float:
    """A request's worst case as zbatch reserves it (its own estimate and bound)."""
    body = {"messages": [{"role": "user", "content": prompt}]}
    return Budget(max_cost=1.0, price=price, spent=0.0).worst_case(
        estimate_tokens(body), MAX_TOKENS
    )


@dataclass
class Writer:
    kind: str  # "whole", "shard 1/3", "batch"
    args: list[str]
    proc: subprocess.Popen[str]
    server: ZaiServer | None  # an online writer's own server
    batch_lines_before: Counter[str]


@dataclass
class Report:
    seed: int
    rows: int
    writers: int = 0
    kills: int = 0
    refused: int = 0
    looks: int = 0  # times results/ was read while writers ran
    doubles: list[tuple[str, int]] = field(default_factory=list)  # ids seen twice at once
    lost: set[str] = field(default_factory=set)  # prompts a kill lost (bought, not durable)
    lost_count: int = 0
    bought: Counter[str] = field(default_factory=Counter)  # prompt -> times paid for
    final_ids: list[str] = field(default_factory=list)
    wrong_answers: int = 0
    seconds: float = 0.0
    budget: float = 0.0
    stopped: int = 0  # writers stopped by the budget (exit 5)
    spent: float = 0.0  # what the servers' answers cost, before the final run
    lost_worst: float = 0.0  # the worst cases of what the kills lost
    lost_usd: float = 0.0  # ... and what it cost
    status_usd: float = 0.0  # status --json's cost_usd, before the final run
    status: dict[str, Any] = field(default_factory=dict)  # status --json, before the final run
    pending: int = 0  # rows without a result before the final run (the budget was spent)

    @property
    def bought_twice(self) -> Counter[str]:
        return Counter({p: n - 1 for p, n in self.bought.items() if n > 1})

    def check(self) -> None:
        assert self.doubles == [], f"an id twice in results/: {self.doubles[:5]}"
        assert len(self.final_ids) == self.rows and len(set(self.final_ids)) == self.rows
        assert self.wrong_answers == 0
        twice = self.bought_twice
        assert set(twice) <= self.lost, sorted(set(twice) - self.lost)[:5]
        assert sum(twice.values()) <= self.lost_count, (sum(twice.values()), self.lost_count)
        within = self.budget + self.lost_worst
        assert self.spent <= within + 1e-9, (self.spent, self.budget, self.lost_worst)
        assert self.spent - self.lost_usd - 1e-9 <= self.status_usd <= self.spent + 1e-9, (
            self.status_usd,
            self.spent,
            self.lost_usd,
        )

    def line(self) -> str:
        return (
            f"seed {self.seed}: {self.writers} writers, {self.kills} killed -9, "
            f"{self.refused} refused (75), {self.looks} looks at results/, "
            f"{sum(self.bought.values())} answers bought for {self.rows} rows, "
            f"{sum(self.bought_twice.values())} bought twice, {self.lost_count} lost by kills, "
            f"{self.stopped} stopped by the budget (5), {self.pending} rows left pending, "
            f"spent ${self.spent:.4f} of ${self.budget:.4f} + ${self.lost_worst:.4f} "
            f"in flight at kills (status ${self.status_usd:.4f}), {self.seconds:.0f} s"
        )


class _Watch:
    """results/ read with pyarrow.dataset over and over; any id twice at once is recorded."""

    def __init__(self, outdir: Path, report: Report) -> None:
        self._folder = outdir / "results"
        self._report = report
        self._stop = threading.Event()

    def look(self) -> None:
        try:
            ids = ds.dataset(self._folder, format="parquet").to_table(columns=["id"])["id"]
        except (FileNotFoundError, pa.ArrowInvalid, OSError):
            return
        self._report.looks += 1
        counts = Counter(ids.to_pylist())
        self._report.doubles += [(i, n) for i, n in counts.items() if n > 1]

    @contextmanager
    def running(self) -> Iterator[None]:
        def loop() -> None:
            while not self._stop.wait(0.05):
                self.look()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(timeout=60)
            self.look()


def durable_ids(outdir: Path) -> set[str]:
    """Ids whose answers the OUTDIR holds: in a journal segment or in results/ parts (read in
    that order: a replay moves rows from journals to parts, never back)."""
    ids: set[str] = set()
    for segment in (outdir / "journal").glob("*.journal"):
        try:
            frames = list(read_frames(segment))
        except FileNotFoundError:  # replayed and removed meanwhile: its rows are parts now
            continue
        for kind, payload in frames:
            if kind == 1:
                ids |= set(pa.ipc.open_stream(payload).read_all().column("id").to_pylist())
    return ids | set(read_table(outdir / "results").column("id").to_pylist())


def status(outdir: Path) -> dict[str, Any]:
    proc = run_zbatch("status", str(outdir), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def run_chaos(workdir: Path, *, seed: int, rounds: int, rows: int = 400) -> Report:
    rng = random.Random(seed)
    report = Report(seed, rows)
    data = prompt_rows(rows)
    prompt_of = {r["id"]: r["prompt"] for r in data}
    inp = write_jsonl(workdir / "in.jsonl", data)
    out = workdir / "out"
    job = workdir / "job.toml"
    job.write_text(JOB, encoding="utf-8")
    report.budget = BUDGET_SHARE * sum(answer_cost(r["prompt"], PRICE) for r in data)
    started = time.monotonic()
    with ExitStack() as stack:
        batch = stack.enter_context(BatchServer())
        servers: list[ZaiServer] = []

        def start(kind: str, budget: float = report.budget) -> Writer:
            base = ["run", str(job), "-i", str(inp), "-o", str(out), "-q"]
            base += ["--backoff-base", "0.01", "--max-cost", f"{budget}"]
            server: ZaiServer | None = None
            if kind == "batch":
                args = [*base, "--base-url", batch.base_url, "--mode", "batch"]
                args += ["--poll-seconds", "0.05"]
            else:
                server = stack.enter_context(ZaiServer(latency=LATENCY))
                servers.append(server)
                args = [*base, "--base-url", server.base_url, "-c", str(CONCURRENCY)]
                args += ["--part-seconds", str(rng.choice([0.3, 2, 600]))]
                if kind != "whole":
                    args += ["--shard", kind.removeprefix("shard ")]
            proc = subprocess.Popen(
                [ZBATCH, *args],
                env=zbatch_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            report.writers += 1
            return Writer(kind, args, proc, server, batch.submitted)

        def ended(writer: Writer) -> None:
            _out, err = writer.proc.communicate(timeout=300)
            code = writer.proc.returncode
            assert code in OK_CODES, f"{writer.kind} exit {code}: {err}"
            report.refused += code == 75
            report.stopped += code == 5

        def killed(writer: Writer) -> None:
            writer.proc.kill()
            writer.proc.communicate(timeout=120)
            report.kills += 1
            bought: set[str] = set()
            if writer.server is not None:
                server = writer.server
                deadline = time.monotonic() + 60
                while server.stats()["inflight"] and time.monotonic() < deadline:
                    time.sleep(0.02)  # the dead writer's last requests still get answered
                bought = set(server.stats()["answered_prompts"])
            else:
                created = batch.submitted - writer.batch_lines_before
                bought = {prompt_of[row_id] for row_id in created}
            held = {prompt_of[i] for i in durable_ids(out)}
            lost = bought - held
            report.lost |= lost
            report.lost_count += len(lost)
            price = price_of(writer.kind)
            report.lost_worst += sum(worst_case(prompt, price) for prompt in lost)
            report.lost_usd += sum(answer_cost(prompt, price) for prompt in lost)

        with _Watch(out, report).running():
            for _round in range(rounds):
                kinds = []
                for _ in range(rng.randint(1, 3)):
                    roll = rng.random()
                    if roll < 0.25:
                        kinds.append("whole")
                    elif roll < 0.4:
                        kinds.append("batch")
                    else:
                        count = rng.randint(2, 4)
                        kinds.append(f"shard {rng.randrange(count)}/{count}")
                writers = [start(kind) for kind in kinds]
                since = time.monotonic()  # past the start-up, into the work (batch: ~1 s)
                while time.monotonic() < since + 60 and not all(
                    w.proc.poll() is not None
                    or (w.server.stats()["requests"] if w.server else time.monotonic() > since + 1)
                    for w in writers
                ):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.8))
                for writer in writers:
                    if writer.proc.poll() is None and rng.random() < 0.8:
                        killed(writer)
                    else:
                        ended(writer)
            last = start("batch")  # collect the open batches, within the budget
            _out, err = last.proc.communicate(timeout=300)
            assert last.proc.returncode in (0, 5), f"final batch: exit {last.proc.returncode} {err}"

            def bought() -> Counter[str]:
                counts: Counter[str] = Counter()
                for server in servers:
                    counts.update(server.stats()["answered_prompts"])
                return counts

            batch_bought = Counter({prompt_of[i]: n for i, n in batch.submitted.items()})
            report.spent = sum(answer_cost(p, PRICE) * n for p, n in bought().items())
            report.spent += sum(
                answer_cost(p, price_of("batch")) * n for p, n in batch_bought.items()
            )
            report.status = status(out)
            report.status_usd = report.status["cost_usd"]
            report.pending = rows - len(set(read_table(out / "results").column("id").to_pylist()))
            last = start("whole", RAISED)  # the user's way on: the same command, a larger budget
            _out, err = last.proc.communicate(timeout=300)
            assert last.proc.returncode == 0, f"final run: exit {last.proc.returncode} {err}"
        report.bought = bought()
        report.bought.update({prompt_of[i]: n for i, n in batch.submitted.items()})
    table = read_table(out / "results")
    report.final_ids = table.column("id").to_pylist()
    for row_id, content in zip(report.final_ids, table.column("content").to_pylist(), strict=True):
        if content != answer_for([{"role": "user", "content": prompt_of[row_id]}]):
            report.wrong_answers += 1
    report.seconds = time.monotonic() - started
    return report
