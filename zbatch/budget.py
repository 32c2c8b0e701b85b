"""What an OUTDIR has cost, and the budget check before each request.

    budget = Budget(limit=5.0, price=price, spent=ledger.usd)
    hold = budget.admit(work)            # None: this request could pass the budget
    ...
    budget.release(hold); usd = budget.charge(answer)

Spend counts every billed answer (also answers that failed a label or JSON check, label
re-asks, hedged duplicates), at the job's prices, and is kept in OUTDIR/spend.json across runs
and ``--force`` generations (see :class:`Spend` and :mod:`zbatch.store.journal`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .pricing import Price, cost

# Without max_tokens an answer has no bound; the budget check assumes this many tokens.
UNBOUNDED_ANSWER_TOKENS = 4096


@dataclass
class Spend:
    """Tokens and USD of billed answers (the durable ledger, or a part of it)."""

    usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    answers: int = 0
    journals: list[str] = field(default_factory=list)  # journals whose spend is included

    def add(self, other: Spend) -> None:
        self.usd += other.usd
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.answers += other.answers

    def count(self, answer: Any, usd: float) -> None:
        """Add one billed answer (anything with the usage fields of a Success) costing ``usd``."""
        self.usd += usd
        self.prompt_tokens += answer.prompt_tokens or 0
        self.completion_tokens += answer.completion_tokens or 0
        self.cached_tokens += answer.cached_tokens or 0
        self.answers += 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spend:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Budget:
    """Admission control: a request goes out only if its worst case still fits the budget.

    The worst case is the prompt estimate plus the answer bound (max_tokens) at the job's
    price; what counts against the limit is the spend so far plus the worst cases of every
    request in flight, so concurrent requests cannot overshoot together."""

    def __init__(self, *, limit: float | None, price: Price | None, spent: float) -> None:
        self.limit = limit
        self.price = price
        self.spent = spent
        self.reserved = 0.0

    def worst_case(self, prompt_tokens: int, answer_tokens: int) -> float:
        bound = answer_tokens or UNBOUNDED_ANSWER_TOKENS
        return cost(self.price, prompt_tokens, 0, bound) or 0.0

    def admit(self, prompt_tokens: int, answer_tokens: int) -> float | None:
        """Reserve a request's worst case; None when it could take the spend past the limit."""
        if self.limit is None:
            return 0.0  # nothing to reserve against
        worst = self.worst_case(prompt_tokens, answer_tokens)
        if self.spent + self.reserved + worst > self.limit:
            return None
        self.reserved += worst
        return worst

    def release(self, reservation: float) -> None:
        self.reserved = max(0.0, self.reserved - reservation)

    def charge(self, answer: Any) -> float:
        """Add one billed answer (anything with the usage fields of a Success) to the spend;
        returns what it cost."""
        prompt = answer.prompt_tokens or 0
        cached, completion = answer.cached_tokens or 0, answer.completion_tokens or 0
        usd = cost(self.price, prompt, cached, completion) or 0.0
        self.spent += usd
        return usd

    def message(self) -> str:
        return (
            f"budget reached: spent ${self.spent:.4f} of ${self.limit or 0:.4f}; "
            "raise --max-cost (limits.max_cost) to continue"
        )
