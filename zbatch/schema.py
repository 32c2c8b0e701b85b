"""The output contract: the columns of results/ and errors/, and how values are fitted to them.

The result schema is fixed per job (SPEC "Output directory"): the base columns, then ``label``
(with labels), ``json`` and the typed JSON fields (with response_format json_object), then the
keep columns. An all-null batch never changes a column's type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from .job.settings import Job

UTC_MS = pa.timestamp("ms", tz="UTC")

RESULT_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("content", pa.string()),
    pa.field("reasoning_content", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("model", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("request_id", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("latency_ms", pa.int32()),
    pa.field("completed_at", UTC_MS),
]

ERROR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("error_code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("retryable", pa.bool_()),
        pa.field("failed_at", UTC_MS),
        pa.field("answer", pa.string()),  # a paid answer that did not fit: kept, not lost
    ]
)

# The error_type values of the error log (SPEC "Error columns").
ERROR_TYPES = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "invalid_response",
    "bad_request",
    "content_filter",
    "invalid_label",
    "invalid_json",
    "invalid_input",
    "template_error",
    "duplicate_id",
    "missing_id",
    "fatal",
)
# Error types about the input row itself, whatever the request: a retry cannot fix them.
INPUT_FAULTS = frozenset({"invalid_input", "missing_id", "duplicate_id"})

JSON_FIELD_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}


# Marks a string column that holds JSON text: exports to JSONL write it as JSON again.
JSON_TEXT = {b"zbatch.json": b"true"}


def result_schema(job: Job, keep_types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The fixed result schema of a job: the base columns, then label/json, then keep_columns."""
    fields = list(RESULT_FIELDS)
    if job.choices:
        fields.append(pa.field("label", pa.string()))
    if job.response_format == "json_object":
        fields.append(pa.field("json", pa.string(), metadata=JSON_TEXT))
        for name, kind in job.json_fields:
            metadata = JSON_TEXT if kind == "json" else None
            fields.append(pa.field(name, JSON_FIELD_TYPES[kind], metadata=metadata))
    for name in job.keep_columns:
        fields.append(pa.field(name, keep_types.get(name, pa.string())))
    return pa.schema(fields)


def infer_type(value: Any) -> pa.DataType:
    """The column type for a keep column read from JSON, decided by its first value."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def keep_caster(kind: pa.DataType) -> Callable[[Any], Any]:
    """A function that fits a JSON value to a keep column's type (None when it cannot)."""
    if pa.types.is_string(kind):
        return lambda v: v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    if pa.types.is_boolean(kind):
        return lambda v: v if isinstance(v, bool) else None
    if pa.types.is_integer(kind):
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None
    if pa.types.is_floating(kind):
        return lambda v: (
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
        )
    return lambda v: v  # Parquet input: the value already has the column's type
