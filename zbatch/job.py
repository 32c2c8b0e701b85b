"""The Job settings: one frozen object, loaded from a TOML file and merged with flags.

    job = load_job("jobs/sentiment.toml", overrides={"concurrency": 8})
    job.output_dir  # absolute; relative paths in the file are relative to the file

Every setting lives in a table of the job file (``[input]``, ``[request]``, ...)
and has exactly one field here; ``SECTIONS`` is the map between the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import JobError

DEFAULT_MODEL = "glm-4.6"
DEFAULT_BASE_URL = "https://api.z.ai/api/paas/v4"


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a run needs to know, resolved and validated."""

    # [input]
    input_path: str = ""
    id_column: str | None = None  # None: "id", or "custom_id" on batch-format lines
    keep_columns: tuple[str, ...] = ()
    # [request]
    model: str | None = None  # None: the body's model or DEFAULT_MODEL
    force_model: bool = False  # the model was given on the command line
    system: str | None = None
    template: str | None = None
    prompt_column: str = "prompt"
    messages_column: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    thinking: bool | None = None
    response_format: str | None = None
    json_fields: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    # [endpoint]
    base_url: str = ""
    api_key_env: str = "ZAI_API_KEY"
    timeout: float = 120.0
    # [limits]
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 8
    max_attempt_seconds: float = 900.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    wait_for_quota: bool = False
    # [labels]
    choices: tuple[str, ...] = ()
    label_retries: int = 1
    # [output]
    output_dir: str = ""
    part_rows: int = 50_000
    part_seconds: float = 30.0
    # [run]
    log_every: float = 30.0
    grace_seconds: float = 10.0
    # [prices]: model -> {"input": .., "cached": .., "output": ..} in USD per 1M tokens
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # [simulate]
    simulate: bool = False
    simulate_latency: float = 0.05
    simulate_rate_limited: float = 0.02
    simulate_server_error: float = 0.01
    simulate_content_filter: float = 0.0

    @property
    def effective_model(self) -> str:
        return self.model or DEFAULT_MODEL

    def fingerprint(self) -> str:
        """A digest of the settings that shape a request; resume refuses a change."""
        shaping = {name: _jsonable(getattr(self, name)) for name in FINGERPRINTED}
        shaping["model"] = self.effective_model
        blob = json.dumps(shaping, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The resolved settings as stored in job.json (never the API key itself)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


# Settings that change what is sent or the result schema: changing one against an existing
# OUTDIR is refused (without --force), so results/ never mixes two requests or two schemas.
FINGERPRINTED = (
    "model",
    "system",
    "template",
    "prompt_column",
    "messages_column",
    "temperature",
    "top_p",
    "max_tokens",
    "thinking",
    "response_format",
    "extra",
    "choices",
    "json_fields",
    "keep_columns",
)

# TOML table -> {key in the file: Job field}
SECTIONS: dict[str, dict[str, str]] = {
    "input": {"path": "input_path", "id_column": "id_column", "keep_columns": "keep_columns"},
    "request": {
        "model": "model",
        "system": "system",
        "template": "template",
        "prompt_column": "prompt_column",
        "messages_column": "messages_column",
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "thinking": "thinking",
        "response_format": "response_format",
        "json_fields": "json_fields",
        "extra": "extra",
    },
    "endpoint": {"base_url": "base_url", "api_key_env": "api_key_env", "timeout": "timeout"},
    "limits": {
        "concurrency": "concurrency",
        "rpm": "rpm",
        "tpm": "tpm",
        "max_retries": "max_retries",
        "max_attempt_seconds": "max_attempt_seconds",
        "backoff_base": "backoff_base",
        "backoff_cap": "backoff_cap",
        "wait_for_quota": "wait_for_quota",
    },
    "labels": {"choices": "choices", "retries": "label_retries"},
    "output": {"dir": "output_dir", "part_rows": "part_rows", "part_seconds": "part_seconds"},
    "run": {"log_every": "log_every", "grace_seconds": "grace_seconds"},
    "simulate": {
        "latency": "simulate_latency",
        "rate_limited": "simulate_rate_limited",
        "server_error": "simulate_server_error",
        "content_filter": "simulate_content_filter",
    },
}
_PATH_FIELDS = ("input_path", "output_dir")
_TUPLE_FIELDS = ("keep_columns", "json_fields", "choices")
_POSITIVE = ("concurrency", "timeout", "part_rows", "part_seconds", "log_every", "backoff_base")


def load_job(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> Job:
    """Load a job file (or none) and apply flag overrides, which win."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_toml(Path(path)))
    given = {k: v for k, v in overrides.items() if v is not None}
    # Paths from flags are relative to the working directory, not to the job file.
    for name in _PATH_FIELDS:
        if name in given:
            given[name] = str(Path(given[name]).expanduser().resolve())
    if "model" in given:
        given["force_model"] = True
    values.update(given)
    if not values.get("base_url"):
        values["base_url"] = os.environ.get("ZAI_BASE_URL") or DEFAULT_BASE_URL
    return _build(values, source=str(path) if path else "the command line")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"job file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section == "prices":
            values["prices"] = table
            continue
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in [*SECTIONS, "prices"])
            raise JobError(f"{path}: unknown table [{section}] (known: {known})")
        if not isinstance(table, dict):
            raise JobError(f"{path}: '{section}' must be a table, like [{section}]")
        for key, value in table.items():
            name = SECTIONS[section].get(key)
            if name is None:
                known = ", ".join(SECTIONS[section])
                raise JobError(f"{path}: unknown key '{key}' in [{section}] (known: {known})")
            values[name] = value
    base = path.resolve().parent
    for name in _PATH_FIELDS:
        if name in values and isinstance(values[name], str):
            values[name] = str((base / Path(values[name]).expanduser()).resolve())
    return values


def _build(values: dict[str, Any], *, source: str) -> Job:
    types = {f.name: f.type for f in dataclasses.fields(Job)}
    for name, value in list(values.items()):
        values[name] = _coerce(name, value, str(types[name]), source)
    if not values.get("input_path"):
        raise JobError(f"{source}: no input: set [input] path in the job file or pass --input")
    if not values.get("output_dir"):
        raise JobError(f"{source}: no output directory: set [output] dir or pass --output")
    job = Job(**values)
    _check(job, source)
    return job


def _coerce(name: str, value: Any, type_name: str, source: str) -> Any:
    def bad(expected: str) -> JobError:
        key = _key_for(name)
        return JobError(f"{source}: {key} must be {expected}, not {value!r}")

    if name in _TUPLE_FIELDS:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if name in ("extra", "prices"):
        if not isinstance(value, dict):
            raise bad("a table")
        return value
    if type_name.startswith("bool"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if type_name.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if type_name.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if type_name.startswith("str") and not isinstance(value, str):
        raise bad("a string")
    return value


def _check(job: Job, source: str) -> None:
    for name in _POSITIVE:
        if getattr(job, name) <= 0:
            raise JobError(f"{source}: {_key_for(name)} must be greater than 0")
    for name in ("max_retries", "label_retries", "grace_seconds"):
        if getattr(job, name) < 0:
            raise JobError(f"{source}: {_key_for(name)} must not be negative")
    for name in ("rpm", "tpm"):
        value = getattr(job, name)
        if value is not None and value <= 0:
            raise JobError(f"{source}: {_key_for(name)} must be greater than 0")
    if job.response_format not in (None, "json_object", "text"):
        raise JobError(
            f'{source}: request.response_format must be "json_object" or "text", '
            f"not {job.response_format!r}"
        )
    if job.json_fields and job.response_format != "json_object":
        raise JobError(f'{source}: request.json_fields needs response_format = "json_object"')
    for spec in job.json_fields:
        name, kind = json_field_spec(spec)
        if not name or kind not in JSON_FIELD_KINDS:
            raise JobError(
                f'{source}: request.json_fields entry {spec!r} must be "name" or '
                f'"name:type" with type one of {", ".join(JSON_FIELD_KINDS)}'
            )
    if job.template is not None and job.messages_column is not None:
        raise JobError(f"{source}: set request.template or request.messages_column, not both")


JSON_FIELD_KINDS = ("string", "int", "float", "bool", "json")


def json_field_spec(spec: str) -> tuple[str, str]:
    """Split a json_fields entry "name" or "name:type" into (name, type)."""
    name, _, kind = spec.partition(":")
    return name.strip(), (kind.strip() or "string")


def _key_for(name: str) -> str:
    for section, keys in SECTIONS.items():
        for key, field_name in keys.items():
            if field_name == name:
                return f"{section}.{key}"
    return name


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
