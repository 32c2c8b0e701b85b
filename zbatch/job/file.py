"""Job files: TOML tables → Job fields, merged with overrides (flags), which win.

    job = load_job("jobs/sentiment.toml", {"concurrency": 8})

Every setting lives in a table of the job file (``[input]``, ``[request]``, ...) and has
exactly one Job field; ``SECTIONS`` (in :mod:`zbatch.job.keys`) is the map between the two.
Relative paths in a file are relative to the file; paths given as overrides are relative to
the working directory.
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
from .keys import SECTIONS
from .rules import CACHE_MODES
from .settings import DEFAULT_BASE_URL, Job

_REQUIRED_PATHS = ("input_path", "output_dir")
_PATH_FIELDS = (*_REQUIRED_PATHS, "metrics_file")
# Paths that may also be unset, or given as something else (output.schema: an inline table).
_OPTIONAL_PATHS = ("output_schema", "cache_path")
_FIELDS = {f.name for f in dataclasses.fields(Job)}


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
