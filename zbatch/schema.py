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

from .output_schema import JSON_TEXT, answer_fields

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
    pa.field("cached", pa.bool_()),  # answered from the response cache, not bought
]
# With request.samples: the answers' labels (or contents) and the majority's share.
SAMPLE_FIELDS = [pa.field("votes", pa.list_(pa.string())), pa.field("agreement", pa.float64())]

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
    "invalid_output",
    "invalid_input",
    "template_error",
    "duplicate_id",
    "missing_id",
    "fatal",
)


def result_schema(job: Job, keep_types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The fixed result schema of a job: the base columns, then label, json and the answer's
    typed fields (json_fields or output.schema), votes/agreement (samples), keep_columns."""
    keep = [pa.field(name, keep_types.get(name, pa.string())) for name in job.keep_columns]
    return pa.schema([*answer_schema_fields(job), *keep])


def answer_schema_fields(job: Job) -> list[pa.Field]:
    """The columns every result row of the job has, before its keep columns."""
    fields = list(RESULT_FIELDS)
    if job.choices:
        fields.append(pa.field("label", pa.string()))
    schema = job.answer_schema
    if schema is not None:
        fields.append(pa.field("json", pa.string(), metadata=JSON_TEXT))
        fields.extend(answer_fields(schema))
    if job.samples > 1:
        fields.extend(SAMPLE_FIELDS)
    return fields


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
