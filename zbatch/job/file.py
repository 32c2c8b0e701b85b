"""Job files: TOML tables → Job fields, merged with overrides (flags), which win.

    job = load_job("jobs/sentiment.toml", {"concurrency": 8})

Every setting lives in a table of the job file (``[input]``, ``[request]``, ...) and has
exactly one Job field; ``SECTIONS`` is the map between the two. Relative paths in a file are
relative to the file; paths given as overrides are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import urls
from ..errors import JobError
from .rules import CACHE_MODES
from .settings import DEFAULT_BASE_URL, Job

# TOML table -> {key in the file: Job field}
SECTIONS: dict[str, dict[str, str]] = {
    "input": {"path": "input_path", "id_column": "id_column", "keep_columns": "keep_columns"},
    "request": {
        "model": "model",
        "system": "system",
        "template": "template",
        "defaults": "defaults",
        "prompt_column": "prompt_column",
        "messages_column": "messages_column",
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "thinking": "thinking",
        "response_format": "response_format",
        "json_fields": "json_fields",
        "samples": "samples",
        "extra": "extra",
    },
    "endpoint": {
        "base_url": "base_url",
        "provider": "provider",
        "api_key_env": "api_key_env",
        "timeout": "timeout",
    },
    "limits": {
        "concurrency": "concurrency",
        "rpm": "rpm",
        "tpm": "tpm",
        "max_retries": "max_retries",
        "max_attempt_seconds": "max_attempt_seconds",
        "backoff_base": "backoff_base",
        "backoff_cap": "backoff_cap",
        "wait_for_quota": "wait_for_quota",
        "down_after": "down_after",
        "max_cost": "max_cost",
        "hedge": "hedge",
        "quota_wait_seconds": "quota_wait_seconds",
    },
    "labels": {"choices": "choices", "retries": "label_retries", "gold_column": "gold_column"},
    "output": {
        "dir": "output_dir",
        "part_rows": "part_rows",
        "part_seconds": "part_seconds",
        "journal": "journal",
        "schema": "output_schema",
        "repair_attempts": "repair_attempts",
        "report": "report",
    },
    "run": {
        "log_every": "log_every",
        "grace_seconds": "grace_seconds",
        "dedupe": "dedupe",
        "cache": "cache",
        "cache_path": "cache_path",
        "mode": "mode",
        "poll_seconds": "poll_seconds",
        "batch_max_rows": "batch_max_rows",
        "batch_max_bytes": "batch_max_bytes",
        "batch_discount": "batch_discount",
        "finish_online": "finish_online",
        "metrics_file": "metrics_file",
        "pushgateway": "pushgateway",
        "metrics_every": "metrics_every",
        "ping": "ping",
        "log_format": "log_format",
    },
    "prices": {},  # model -> { input, cached, output }: checked by Job
    "simulate": {
        "latency": "simulate_latency",
        "rate_limited": "simulate_rate_limited",
        "server_error": "simulate_server_error",
        "content_filter": "simulate_content_filter",
    },
}
_REQUIRED_PATHS = ("input_path", "output_dir")
_PATH_FIELDS = (*_REQUIRED_PATHS, "metrics_file")
# Paths that may also be unset, or given as something else (output.schema: an inline table).
_OPTIONAL_PATHS = ("output_schema", "cache_path")
_FIELDS = {f.name for f in dataclasses.fields(Job)}


def key_for(name: str) -> str:
    """A field's name as a job file writes it ("limits.concurrency")."""
    for section, keys in SECTIONS.items():
        for key, field_name in keys.items():
            if field_name == name:
                return f"{section}.{key}"
    return name


def default_of(name: str) -> Any:
    """A field's default, for help texts (so they cannot drift from the Job)."""
    return next(f.default for f in dataclasses.fields(Job) if f.name == name)


def load_job(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> Job:
    """Load a job file (or none) and apply overrides named like the Job fields; flags win."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_toml(Path(path)))
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - _FIELDS)
    if unknown:
        raise JobError(f"unknown setting(s): {', '.join(unknown)}")
    if _is_cache_path(given.get("cache")):  # --cache PATH: where, not whether
        given["cache_path"] = given.pop("cache")
    for name in _PATH_FIELDS:
        if name in given:
            given[name] = _resolve(str(given[name]), Path.cwd())
    for name in _OPTIONAL_PATHS:
        if isinstance(given.get(name), str):
            given[name] = _resolve(given[name], Path.cwd())
    if "model" in given:
        given["force_model"] = True
    values.update(given)
    if not values.get("base_url"):
        values["base_url"] = os.environ.get("ZAI_BASE_URL") or DEFAULT_BASE_URL
    source = str(path) if path else "the command line"
    for name in _REQUIRED_PATHS:  # unset: the Job's own check says so, naming the flag
        values.setdefault(name, "")
    try:
        return Job(**values)
    except JobError as exc:
        raise JobError(f"{source}: {exc}") from None


def _is_cache_path(value: Any) -> bool:
    """run.cache names a file rather than a mode (on, all, off)."""
    return isinstance(value, str) and value.strip() != "" and value not in CACHE_MODES


def _resolve(value: str, base: Path) -> str:
    """A local path made absolute against ``base``; URLs (s3://, gs://, file://) and "-"
    (stdin) as written."""
    if "://" in value or value == "-" or urls.looks_remote(value):
        return value  # a malformed URL (s3:/x) is refused by the Job's check, not made local
    return str((base / Path(value).expanduser()).resolve())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"job file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobError(f"job file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise JobError(f"{path}: unknown table [{section}] (known: {known})")
        if not isinstance(table, dict):
            raise JobError(f"{path}: '{section}' must be a table, like [{section}]")
        if section == "prices":
            values["prices"] = table
            continue
        for key, value in table.items():
            name = SECTIONS[section].get(key)
            if name is None:
                known = ", ".join(SECTIONS[section])
                raise JobError(f"{path}: unknown key '{key}' in [{section}] (known: {known})")
            values[name] = value
    if _is_cache_path(values.get("cache")):  # cache = "PATH": where, not whether
        values["cache_path"] = values.pop("cache")
    base = path.resolve().parent
    for name in (*_PATH_FIELDS, *_OPTIONAL_PATHS):
        if isinstance(values.get(name), str):
            values[name] = _resolve(values[name], base)
    return values
