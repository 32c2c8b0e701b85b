"""The output contract: the columns of results/ and errors/, and how values are fitted to them.

The result schema is fixed per job (SPEC "Output directory"): the base columns, then ``label``
(with labels), ``json`` and the typed JSON fields (json_fields, or one column per property of
output.schema: :func:`answer_fields`), ``votes`` and ``agreement`` (samples), then the keep
columns. An all-null batch never changes a column's type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .answers.schema import resolve, single_type

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
# Error types about the input row itself, whatever the request: a retry cannot fix them.
INPUT_FAULTS = frozenset({"invalid_input", "missing_id", "duplicate_id"})


# Marks a string column that holds JSON text: exports to JSONL write it as JSON again.
JSON_TEXT = {b"zbatch.json": b"true"}

# json_fields kinds as JSON Schema: "json" is any value, stored as JSON text.

# The column type of each JSON Schema type (answer fields, output.schema).
_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "number": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
}


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


# --- answer fields: the typed columns of a JSON answer (json_fields, output.schema) -----------


def answer_fields(schema: Mapping[str, Any]) -> list[pa.Field]:
    """One result column per top-level property, typed from the schema."""
    return [field_for(name, prop, schema) for name, prop in schema.get("properties", {}).items()]


def field_for(name: str, prop: Any, root: Mapping[str, Any]) -> pa.Field:
    kind = arrow_type(prop, root)
    json_text = pa.types.is_string(kind) and _json_text(resolve(prop, root))
    return pa.field(name, kind, metadata=JSON_TEXT if json_text else None)


def arrow_type(prop: Any, root: Mapping[str, Any], depth: int = 0) -> pa.DataType:
    """The column type of a property: string, number -> float64, integer -> int64, boolean,
    enum -> string, object with properties -> struct, array -> list; anything else (several
    types, free-form objects) is JSON text."""
    prop = resolve(prop, root)
    if depth > 16:
        return pa.string()
    if "enum" in prop:
        values = prop["enum"]
        kinds = (
            {_json_type(v) for v in values if v is not None} if isinstance(values, list) else set()
        )
        return _SCALARS.get(kinds.pop(), pa.string()) if len(kinds) == 1 else pa.string()
    kind = single_type(prop)
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "object" and isinstance(prop.get("properties"), dict) and prop["properties"]:
        return pa.struct(
            [pa.field(n, arrow_type(p, root, depth + 1)) for n, p in prop["properties"].items()]
        )
    if kind == "array" and isinstance(prop.get("items"), dict):
        return pa.list_(arrow_type(prop["items"], root, depth + 1))
    return pa.string()


def _json_text(prop: Mapping[str, Any]) -> bool:
    """Whether a string column holds JSON text rather than a string answer."""
    return single_type(prop) != "string" and "enum" not in prop


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def fit_value(value: Any, field: pa.Field) -> Any:
    """A JSON value as the column ``field`` holds it; None when it does not fit."""
    if value is None:
        return None
    kind = field.type
    if pa.types.is_string(kind):
        if field.metadata == JSON_TEXT or not isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        return value
    if pa.types.is_boolean(kind):
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # a bool is not a number
    if pa.types.is_integer(kind):
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, float) and value.is_integer() else None
    if pa.types.is_floating(kind):
        return float(value) if isinstance(value, int | float) else None
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return None
        return {f.name: fit_value(value.get(f.name), f) for f in kind}
    if pa.types.is_list(kind):
        if not isinstance(value, list):
            return None
        return [fit_value(item, kind.value_field) for item in value]
    return None
