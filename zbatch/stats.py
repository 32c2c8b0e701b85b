"""The figures of a run: live counters while it runs, and summary.json at the end."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .outcome import Outcome, Scope, Success
from .pricing import Price, cost

# Upper bounds (seconds) of the request-latency buckets: summary.json's and the metrics'.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Agreement:
    """Labels against reference ("gold") labels: (gold, predicted) -> rows."""

    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreed(self) -> int:
        return sum(count for (gold, label), count in self.pairs.items() if gold == label)

    @property
    def accuracy(self) -> float | None:
        return self.agreed / self.rows if self.rows else None

    def confusion(self) -> dict[str, dict[str, int]]:
        """gold label -> predicted label -> rows."""
        table: dict[str, dict[str, int]] = {}
        for (gold, label), count in sorted(self.pairs.items()):
            table.setdefault(gold, {})[label] = count
        return table

    def to_json(self) -> dict[str, Any]:
        accuracy = None if self.accuracy is None else round(self.accuracy, 4)
        return {
            "rows": self.rows,
            "agreed": self.agreed,
            "accuracy": accuracy,
            "confusion": self.confusion(),
        }


@dataclass
class Latency:
    """Answered requests' latencies, counted into :data:`LATENCY_BUCKETS` (+Inf last)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total_seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_seconds += seconds

    def to_json(self) -> dict[str, Any]:
        bounds = [*(f"{bound:g}" for bound in LATENCY_BUCKETS), "+Inf"]
        return {
            "count": sum(self.counts),
            "sum_seconds": round(self.total_seconds, 3),
            "buckets": dict(zip(bounds, self.counts, strict=True)),  # per bucket, not cumulative
        }


@dataclass
class Stats:
    """Counters the runner updates and progress displays read."""

    total: int | None = None  # rows in the input (None until counted)
    input_rows: int = 0
    skipped: int = 0  # already done in an earlier run
    ok: int = 0
    failed: int = 0  # rows that ended in the error log this run
    requests: int = 0
    # Answers to requests by HTTP status and provider code ("200", "429/1302", "none": no
    # HTTP answer); rate-limit rejections; answered requests' latency.
    responses: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    latency: Latency = field(default_factory=Latency)
    cache_hits: int = 0  # rows answered from a response cache (the cache counts them here)
    in_flight: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # by error_type
    errors: Counter[str] = field(default_factory=Counter)  # final row errors by error_type
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    truncated: int = 0  # finish_reason length / context window exceeded
    usage_malformed: int = 0  # answers whose token counts were unusable (counted as none)
    deduplicated: int = 0  # rows answered by an identical request of another row
    saved: Counter[str] = field(default_factory=Counter)  # their tokens, not paid again
    cache_saved: Counter[str] = field(default_factory=Counter)  # their tokens, not bought
    repairs: int = 0  # requests that fed a schema validation error back
    repaired: int = 0  # rows whose answer matched the schema after a repair
    labels: Counter[str] = field(default_factory=Counter)
    gold: Agreement = field(default_factory=Agreement)  # with labels.gold_column
    json_missing: Counter[str] = field(default_factory=Counter)  # JSON field -> answers without it
    json_mistyped: Counter[str] = field(default_factory=Counter)  # ... with a value of another type
    keep_mistyped: Counter[str] = field(default_factory=Counter)  # keep column -> nulled rows
    concurrency: int = 0
    concurrency_min: int = 0
    limiter: str = ""  # what the in-flight limit concluded from rejections, and why
    price: Price | None = None
    hedged: int = 0  # second attempts sent for stuck ones at the end of the input
    hedged_usd: float = 0.0  # what the hedges' second answers cost
    worst_charged: int = 0  # answers with missing or unusable usage, charged their worst case
    worst_charged_usd: float = 0.0  # ... what they were charged
    spent: float | None = None  # USD the OUTDIR has cost, all runs together (the ledger)
    max_cost: float | None = None
    started: float = field(default_factory=time.monotonic)
    outcome: str = "running"
    exit_code: int | None = None
    limited: bool = False  # --limit ended the input before its end
    ended: float | None = None  # monotonic time of the end: the figures stay as they were

    def end(self, stopped: BaseException | None) -> None:
        """Say how the run ended: finished (with errors or not), stopped at --limit with rows
        left, or why it stopped."""
        self.ended = time.monotonic()
        if stopped is not None:
            self.outcome = f"stopped: {stopped}"
        elif self.limited and (self.total is None or self.pending):
            left = "some rows" if self.total is None else f"{self.pending} rows"
            errors = ", some rows failed" if self.failed else ""
            self.outcome = f"stopped at --limit{errors}: {left} pending (run again for the rest)"
        else:
            self.outcome = "finished" if not self.failed else "finished with errors"

    def count_attempt(self, outcome: Outcome) -> None:
        """What one request brought back: its status and code, its latency, a rejection."""
        if isinstance(outcome, Success):
            self.responses["200"] += 1
            if outcome.latency_ms is not None:
                self.latency.add(outcome.latency_ms / 1000)
            return
        status = "none" if outcome.status_code is None else str(outcome.status_code)
        self.responses[f"{status}/{outcome.error_code}" if outcome.error_code else status] += 1
        if outcome.scope is Scope.SLOW_DOWN:
            self.rate_limited += 1

    def count_deduplicated(self, answer: Any) -> None:
        """A row answered by another row's identical request: its tokens were not paid."""
        self.deduplicated += 1
        self.saved["prompt"] += answer.prompt_tokens or 0
        self.saved["cached"] += answer.cached_tokens or 0
        self.saved["completion"] += answer.completion_tokens or 0

    def count_cache_hit(self, answers: Any) -> None:
        """A row answered from the response cache: what its answers cost when bought."""
        self.cache_hits += 1
        for answer in answers:
            self.cache_saved["prompt"] += answer.prompt_tokens or 0
            self.cache_saved["cached"] += answer.cached_tokens or 0
            self.cache_saved["completion"] += answer.completion_tokens or 0

    @property
    def saved_cost(self) -> float | None:
        return _cost_of(self.price, self.saved)

    @property
    def cache_saved_cost(self) -> float | None:
        return _cost_of(self.price, self.cache_saved)

    def count_failure(self, error_type: str) -> None:
        """A row ended in the error log this run."""
        self.failed += 1
        self.errors[error_type] += 1

    @property
    def done(self) -> int:
        """Rows settled by this run."""
        return self.ok + self.failed

    @property
    def settled(self) -> int:
        """Rows settled by this run or an earlier one."""
        return self.skipped + self.ok + self.failed

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def cost(self) -> float | None:
        """This run's spend: its answers' tokens, and the worst cases of answers without usage."""
        tokens = cost(self.price, self.prompt_tokens, self.cached_tokens, self.completion_tokens)
        return None if tokens is None else tokens + self.worst_charged_usd

    def line(self) -> str:
        """One plain progress line, for logs off a terminal."""
        total = "?" if self.total is None else str(self.total)
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        spent = "" if self.cost is None else f", ${self.cost:.4f}"
        return (
            f"progress {self.settled}/{total} rows, {rate:.1f} rows/s, ok {self.ok}, "
            f"failed {self.failed}, tokens {self.prompt_tokens}+{self.completion_tokens}"
            f"{spent}, concurrency {self.concurrency}"
        )

    @property
    def pending(self) -> int:
        return max(0, (self.total or 0) - self.settled)

    @property
    def requests_per_second(self) -> float | None:
        elapsed = self.elapsed
        return round(self.requests / elapsed, 2) if elapsed > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "rows": {
                "input": self.input_rows,
                "ok": self.ok,
                "failed": self.failed,
                "skipped_already_done": self.skipped,
                "pending": self.pending,
            },
            "requests": self.requests,
            "responses": dict(self.responses),
            "rate_limited": self.rate_limited,
            "latency": self.latency.to_json(),
            "cache_hits": self.cache_hits,
            "retries": dict(self.retries),
            "errors": dict(self.errors),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
            },
            "truncated_rows": self.truncated,
            "answers_with_malformed_usage": self.usage_malformed,
            "answers_charged_worst_case": {
                "answers": self.worst_charged,
                "usd": round(self.worst_charged_usd, 6),
            },
            "deduplicated": {
                "rows": self.deduplicated,
                "saved_usd": None if self.saved_cost is None else round(self.saved_cost, 6),
            },
            "cache": {
                "hits": self.cache_hits,
                "saved_usd": round(self.cache_saved_cost or 0.0, 6),
                "saved_tokens": self.cache_saved["prompt"] + self.cache_saved["completion"],
            },
            "repairs": {"requests": self.repairs, "repaired_rows": self.repaired},
            "labels": dict(self.labels),
            "gold": self.gold.to_json(),
            "json_fields": {
                "missing": dict(self.json_missing),
                "mistyped": dict(self.json_mistyped),
            },
            "keep_columns_mistyped": dict(self.keep_mistyped),
            "cost_usd": None if self.cost is None else round(self.cost, 6),
            "spent_usd_all_runs": None if self.spent is None else round(self.spent, 6),
            "max_cost_usd": self.max_cost,
            "hedged_requests": self.hedged,
            "hedged_usd": round(self.hedged_usd, 6),
            "wall_seconds": round(self.elapsed, 3),
            "requests_per_second": self.requests_per_second,
            "concurrency": {
                "final": self.concurrency,
                "minimum": self.concurrency_min,
                "limiter": self.limiter,
            },
        }


def _cost_of(price: Price | None, tokens: Counter[str]) -> float | None:
    return cost(price, tokens["prompt"], tokens["cached"], tokens["completion"])
