"""`zbatch status`: what an output directory holds, as typed figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .batch.mode import batch_price, describe, open_batches
from .errors import JobError
from .job import DEFAULT_MODEL
from .pricing import cost, price_for
from .source import count_rows, open_input
from .store import RESULTS, OutputDir


@dataclass(frozen=True)
class Tokens:
    prompt: int = 0
    completion: int = 0
    cached: int = 0


@dataclass(frozen=True)
class LastRun:
    outcome: str
    exit_code: int | None


@dataclass(frozen=True)
class Status:
    """Counts, tokens, cost and the last run's outcome of an output directory."""

    outdir: str
    input_rows: int | None  # None when the input cannot be found any more
    done: int
    failed: int
    failed_retryable: int
    tokens: Tokens
    cost_usd: float | None  # None when the model has no price
    labels: dict[str, int] = field(default_factory=dict)
    last_run: LastRun | None = None
    batches: list[dict[str, Any]] = field(default_factory=list)  # batch mode: see batch.mode

    @property
    def pending(self) -> int | None:
        if self.input_rows is None:
            return None
        return max(0, self.input_rows - self.done - self.failed)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pending": self.pending}


def read_status(outdir: OutputDir) -> Status:
    """Read the figures of an OUTDIR: only the id, token and label columns are read."""
    settings = outdir.read_job()["settings"]
    results = outdir.parts(RESULTS)
    state = outdir.load_state()
    counted = {"prompt": 0, "completion": 0, "cached": 0}
    labels: Counter[str] = Counter()
    if results.names:
        for key in counted:
            total = pc.sum(results.column(f"{key}_tokens", pa.int64())).as_py()
            counted[key] = int(total or 0)
        if "label" in results.schema.names:
            for count in pc.value_counts(results.column("label", pa.string())).to_pylist():
                if count["values"] is not None:
                    labels[count["values"]] += count["counts"]
    tokens = Tokens(**counted)
    try:
        input_rows: int | None = count_rows(open_input(settings["input_path"]).paths)
    except JobError:
        input_rows = None
    model = settings.get("model") or DEFAULT_MODEL
    price = price_for(model, settings.get("prices") or {})
    if settings.get("mode") == "batch":
        price = batch_price(price, settings.get("batch_discount", 1.0))
    spent = cost(price, tokens.prompt, tokens.cached, tokens.completion)
    summary = outdir.read_summary()
    return Status(
        outdir=outdir.location,
        input_rows=input_rows,
        done=len(state.succeeded),
        failed=state.failed,
        failed_retryable=state.failed_retryable,
        tokens=tokens,
        cost_usd=None if spent is None else round(spent, 6),
        labels=dict(labels),
        last_run=None
        if summary is None
        else LastRun(summary.get("outcome", "unknown"), summary.get("exit_code")),
        batches=[describe(s) for s in open_batches(outdir.storage)],
    )
