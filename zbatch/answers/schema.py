"""Answers that must match a JSON Schema (``[output] schema``).

    schema = load_schema("schemas/ticket.json", base=Path("jobs"))   # a file, a dict, or a
    check = SchemaCheck(schema)                                     # Pydantic model class
    obj, problem = check.read('{"label": "Bug", "priority": 2}')     # normalised, or the error

The typed result columns of a JSON answer are :func:`zbatch.schema.answer_fields`'s.
How an endpoint is told about the schema is ``Job.effective_schema_form`` (the provider
profile's, or ``endpoint.schema_form``): :func:`response_format` builds the request's
``response_format`` in each form, and :func:`system_note` the system message of the "system" one.
The request's ``json_fields`` are the same mechanism without validation: each ``name:kind``
is a one-property schema (:data:`FIELD_KINDS`), so both produce columns and values alike.
This module imports no pyarrow: the job settings use it.

Validation uses fastjsonschema (``pip install 'zbatch[schema]'``): it compiles a schema to
Python and checks an answer in ~6 us, parsing included, against ~41 us for jsonschema's
validator alone (bench/labelling_cpu.py, docs/performance.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import JobError
from .checks import NotJson, normalize_label, parse_json_object

FIELD_KINDS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "json": {},
}

INSTALL_HINT = "pip install 'zbatch[schema]'"
SETTING = "output.schema"


def load_schema(value: Any, base: Path | None = None) -> dict[str, Any] | None:
    """The JSON Schema ``value`` names: a file path (relative to ``base``), a table / dict,
    or a Pydantic model class; JobError naming output.schema when it is none of those."""
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        path = Path(value).expanduser()
        path = path if path.is_absolute() or base is None else base / path
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JobError(f"{SETTING}: the file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise JobError(f"{SETTING}: {path} is not a JSON Schema file ({exc})") from None
        return _object_schema(loaded, str(path))
    if isinstance(value, Mapping):
        return _object_schema(json.loads(json.dumps(value)), "the table")
    model_schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(model_schema):  # a Pydantic model class
        return _object_schema(model_schema(), value.__name__)
    raise JobError(
        f"{SETTING} must be a JSON Schema file, a table or a Pydantic model, not {value!r}"
    )


def _object_schema(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise JobError(
            f'{SETTING}: {where} must describe a JSON object: {{"type": "object", '
            '"properties": {...}}'
        )
    return schema


class SchemaCheck:
    """Reads an answer as a JSON object and checks it against the schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        try:
            import fastjsonschema
        except ImportError:
            raise JobError(f"{SETTING} needs the fastjsonschema package: {INSTALL_HINT}") from None
        self._error = fastjsonschema.JsonSchemaException
        try:
            self._validate: Callable[[Any], Any] = fastjsonschema.compile(dict(schema))
        except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
            raise JobError(f"{SETTING} is not a usable JSON Schema: {exc}") from None
        self.enums = enum_fields(schema)

    def read(self, content: str) -> tuple[dict[str, Any] | None, str]:
        """The answer's object (enum values normalised like labels), or None and why not."""
        try:
            obj = parse_json_object(content)
        except NotJson as exc:
            return None, str(exc)
        for name, choices in self.enums.items():
            value = obj.get(name)
            if isinstance(value, str):
                obj[name] = normalize_label(value, choices) or value
        try:
            self._validate(obj)
        except self._error as exc:
            return None, f"the answer does not match the schema: {str(exc)[:300]}"
        return obj, ""


def enum_fields(schema: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Top-level properties whose values are a fixed set of strings: name -> the values."""
    enums = {}
    for name, prop in schema.get("properties", {}).items():
        values = resolve(prop, schema).get("enum")
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            enums[name] = tuple(values)
    return enums


def single_type(prop: Mapping[str, Any]) -> str | None:
    """The one non-null type a property allows ("type": ["string", "null"], anyOf with null,
    Pydantic's Optional), or None."""
    kind = prop.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        return rest[0] if len(rest) == 1 and isinstance(rest[0], str) else None
    if isinstance(kind, str):
        return kind
    return None


def resolve(prop: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A property with a local ``$ref`` followed, and Optional's ``anyOf [X, null]`` as X."""
    for _ in range(16):
        if not isinstance(prop, Mapping):
            return {}
        ref = prop.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            prop = target
            continue
        options = prop.get("anyOf") or prop.get("oneOf")
        if isinstance(options, list):
            real = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            if len(real) == 1:
                prop = real[0]
                continue
        return prop
    return {}


def response_format(schema: Mapping[str, Any], form: str) -> dict[str, Any]:
    """The request's ``response_format`` in one of ``zbatch.providers.SCHEMA_FORMS``:
    structured outputs (OpenAI, vLLM, llama.cpp's llama-server), JSON mode carrying the schema
    (llama-cpp-python's server, Together, Fireworks), or plain JSON mode (Z.AI: the schema goes
    in the system message, :func:`system_note`)."""
    if form == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": dict(schema), "strict": _strict(schema)},
        }
    if form == "json_object":
        return {"type": "json_object", "schema": dict(schema)}
    return {"type": "json_object"}


def _strict(schema: Mapping[str, Any]) -> bool:
    """OpenAI's strict mode needs every property required and no others allowed."""
    properties = schema.get("properties", {})
    required = set(schema.get("required") or ())
    return schema.get("additionalProperties") is False and required == set(properties)


def system_note(schema: Mapping[str, Any]) -> str:
    """What a JSON-mode-only endpoint (Z.AI) is told in the system message instead."""
    return "Answer with one JSON object only, matching this JSON Schema:\n" + json.dumps(
        schema, ensure_ascii=False
    )


# How the message that asks again begins (the loopback test server recognises it by this).
REPAIR_PREFIX = "Your answer is not valid: "


def repair_message(problem: str) -> str:
    """The user message that asks again after an answer failed the schema."""
    return (
        f"{REPAIR_PREFIX}{problem}. Answer again with only the corrected JSON object, "
        "matching the schema."
    )
