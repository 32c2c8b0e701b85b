"""`zbatch errors`: the failed rows of an OUTDIR grouped by error type and code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobError
from ..store import ERRORS, OutputDir
from ..store.state import retry_failed_problem
from .outcomes import final_outcomes

# Error types that --retry-failed can fix by sending the row again; the others (the input's own
# faults) need the input fixed, and the retryable ones are sent again by any run.
RETRY_FIXES = frozenset(
    {"bad_request", "content_filter", "invalid_label", "invalid_json", "template_error", "fatal"}
)


@dataclass(frozen=True)
class FailureGroup:
    """Failed rows that share an error type and code: how many, a few ids, a few messages,
    and (when asked) the paid answers they got."""

    error_type: str
    error_code: str | None
    count: int
    retryable: int  # how many the next run sends again
    ids: list[str]
    messages: list[str]
    answers: dict[str, str] = field(default_factory=dict)  # id -> the paid answer, when asked


def failure_groups(
    outdir: OutputDir, *, error_type: str | None = None, sample: int = 5, answers: bool = False
) -> list[FailureGroup]:
    """The failed rows grouped by type and code, largest first, each with up to ``sample``
    ids (and with ``answers``, up to ``sample`` paid answers) and 3 distinct messages.

    Failed rows are what a run's summary and ``status`` count: the ids whose latest outcome
    is an error (as export has them), and the input rows that repeat an id (duplicate_id:
    the id itself was answered once)."""
    problem = None if error_type is None else retry_failed_problem({error_type})
    if problem is not None:
        raise JobError(f"error type: {problem}")
    try:
        outcomes = final_outcomes(outdir)
    except JobError:  # nothing committed yet
        return []
    groups: dict[tuple[str, str | None], dict[str, Any]] = {}

    def add(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if error_type is not None and row["error_type"] != error_type:
                continue
            group = groups.setdefault(
                (row["error_type"], row["error_code"]),
                {"count": 0, "retryable": 0, "ids": [], "messages": [], "answers": {}},
            )
            group["count"] += 1
            group["retryable"] += bool(row["retryable"])
            if len(group["ids"]) < sample:
                group["ids"].append(row["id"])
            if len(group["messages"]) < 3 and row["message"] not in group["messages"]:
                group["messages"].append(row["message"])
            if answers and row["answer"] is not None and len(group["answers"]) < sample:
                group["answers"][row["id"]] = row["answer"]

    columns = ["id", "error_type", "error_code", "message", "retryable", "answer"]
    if "error_type" in outcomes.schema.names:  # else: only results were ever committed
        for batch in outcomes.batches:
            failed = batch.filter(pc.not_equal(batch.column("status"), "ok"))
            add(_with_columns(failed, columns).to_pylist())
        errors = outdir.parts(ERRORS)
        for batch in errors.batches(errors.schema.names):
            repeats = batch.filter(pc.equal(batch.column("error_type"), "duplicate_id"))
            add(_with_columns(repeats, columns).to_pylist())
    ordered = sorted(groups.items(), key=lambda item: -item[1]["count"])
    return [FailureGroup(kind, code, **figures) for (kind, code), figures in ordered]


def _with_columns(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """``batch``'s columns ``names``, a missing one (``answer`` in an older log) all null."""
    arrays = [
        batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows)
        for name in names
    ]
    return pa.RecordBatch.from_arrays(arrays, names=names)
