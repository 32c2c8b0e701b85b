"""The figures of a run: live counters while it runs, and summary.json at the end."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .pricing import Price, cost


@dataclass
class Stats:
    """Counters the runner updates and progress displays read."""

    total: int | None = None  # rows in the input (None until counted)
    input_rows: int = 0
    skipped: int = 0  # already done in an earlier run
    ok: int = 0
    failed: int = 0  # rows that ended in the error log this run
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # by error_type
    errors: Counter[str] = field(default_factory=Counter)  # final row errors by error_type
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    truncated: int = 0  # finish_reason length / context window exceeded
    labels: Counter[str] = field(default_factory=Counter)
    concurrency: int = 0
    concurrency_min: int = 0
    price: Price | None = None
    started: float = field(default_factory=time.monotonic)
    outcome: str = "running"
    exit_code: int | None = None

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
        return time.monotonic() - self.started

    @property
    def cost(self) -> float | None:
        return cost(self.price, self.prompt_tokens, self.cached_tokens, self.completion_tokens)

    def line(self) -> str:
        """One plain progress line, for logs off a terminal."""
        total = "?" if self.total is None else str(self.total)
        rate = self.done / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"progress {self.settled}/{total} rows, {rate:.1f} rows/s, ok {self.ok}, "
            f"failed {self.failed}, tokens {self.prompt_tokens}+{self.completion_tokens}, "
            f"concurrency {self.concurrency}"
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
            "retries": dict(self.retries),
            "errors": dict(self.errors),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached": self.cached_tokens,
            },
            "truncated_rows": self.truncated,
            "labels": dict(self.labels),
            "cost_usd": None if self.cost is None else round(self.cost, 6),
            "wall_seconds": round(self.elapsed, 3),
            "requests_per_second": self.requests_per_second,
            "concurrency": {"final": self.concurrency, "minimum": self.concurrency_min},
        }
