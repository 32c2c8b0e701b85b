"""What makes a :class:`~zbatch.job.Job` valid: each value of the field's type, and the rules
between them. Every error is a JobError naming the setting as a job file writes it."""

from __future__ import annotations

import math
import string
import types
import typing
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import urls
from ..errors import JobError
from ..providers import SCHEMA_FORMS, ZAI, provider_for
from .keys import key_for

if TYPE_CHECKING:
    from .settings import Job

JSON_FIELD_KINDS = ("string", "int", "float", "bool", "json")
# The values of two settings with a fixed choice (the flags offer the same ones).
MODES = ("online", "batch")
CACHE_MODES = ("on", "all", "off")
LOG_FORMATS = ("plain", "json")
RESPONSE_FORMATS = ("json_object", "text")
# A template's format spec may pad a value: refuse widths that would inflate a prompt.
MAX_TEMPLATE_WIDTH = 10_000


def fit(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or a JobError naming the setting."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    kind = next(a for a in allowed if a is not type(None))
    origin = typing.get_origin(kind) or kind

    def bad(expected: str) -> JobError:
        return JobError(f"{key_for(name)} must be {expected}, not {value!r}")

    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise bad("a list of strings")
        if name == "json_fields":
            return tuple(_json_field(item) for item in value)
        if not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise bad("a table")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise bad("a number")
        return float(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _json_field(item: Any) -> tuple[str, str]:
    """A json_fields entry, "name" or "name:kind" (or a (name, kind) pair), as a pair."""
    if isinstance(item, str):
        name, _, kind = item.partition(":")
        pair = (name.strip(), kind.strip() or "string")
    elif isinstance(item, list | tuple) and len(item) == 2:
        pair = (str(item[0]), str(item[1]))
    else:
        pair = ("", "")
    if not pair[0] or pair[1] not in JSON_FIELD_KINDS:
        raise JobError(
            f'request.json_fields entry {item!r} must be "name" or "name:type" with type one '
            f"of {', '.join(JSON_FIELD_KINDS)}"
        )
    return pair


_POSITIVE = (
    "concurrency",
    "timeout",
    "part_rows",
    "part_seconds",
    "log_every",
    "backoff_base",
    "down_after",
    "quota_wait_seconds",
    "poll_seconds",
    "batch_max_rows",
    "batch_max_bytes",
    "metrics_every",
)
_NOT_NEGATIVE = (
    "max_retries",
    "label_retries",
    "repair_attempts",
    "grace_seconds",
    "backoff_cap",
    "simulate_latency",
)
_FINITE = (
    "timeout",
    "max_attempt_seconds",
    "part_seconds",
    "log_every",
    "grace_seconds",
    "down_after",
    "quota_wait_seconds",
    "poll_seconds",
    "metrics_every",
)


def check(job: Job) -> None:
    def fail(name: str, what: str) -> JobError:
        return JobError(f"{key_for(name)} {what}, not {getattr(job, name)!r}")

    for name in ("input_path", "output_dir"):
        if not getattr(job, name):
            flag = "--input" if name == "input_path" else "--output"
            raise JobError(f"{key_for(name)} is not set: set it in the job file or pass {flag}")
        urls.check_scheme(getattr(job, name), key_for(name))
    for name in _POSITIVE:
        if getattr(job, name) <= 0:
            raise fail(name, "must be greater than 0")
    for name in _NOT_NEGATIVE:
        if getattr(job, name) < 0:
            raise fail(name, "must not be negative")
    for name in _FINITE:
        if not math.isfinite(getattr(job, name)):
            raise fail(name, "must be a finite number")
    if job.max_cost is not None and not (0 <= job.max_cost < math.inf):
        raise fail("max_cost", "must be a number of USD ≥ 0")
    for name in ("rpm", "tpm"):
        value = getattr(job, name)
        if value is not None and not (0 < value < math.inf):
            raise fail(name, "must be greater than 0 and finite")
    if job.temperature is not None and not 0 <= job.temperature <= 2:
        raise fail("temperature", "must be between 0 and 2")
    if job.top_p is not None and not 0 < job.top_p <= 1:
        raise fail("top_p", "must be greater than 0 and at most 1")
    if job.max_tokens is not None and job.max_tokens < 1:
        raise fail("max_tokens", "must be at least 1")
    if job.mode not in MODES:
        raise fail("mode", _one_of(MODES))
    if job.cache not in CACHE_MODES:
        raise fail("cache", _one_of(CACHE_MODES))
    if not 1 <= job.samples <= 128:
        raise fail("samples", "must be a whole number from 1 to 128")
    if job.samples > 1 and job.mode == "batch":
        raise JobError("request.samples works online only: run without --mode batch")
    if job.log_format not in LOG_FORMATS:
        raise fail("log_format", _one_of(LOG_FORMATS))
    for name in ("ping", "pushgateway"):
        _check_monitor_url(name, getattr(job, name))
    if job.batch_max_rows > 50_000:
        raise fail("batch_max_rows", "must be at most 50000 (the providers' limit per file)")
    for name in (
        "simulate_rate_limited",
        "simulate_server_error",
        "simulate_content_filter",
        "batch_discount",
    ):
        if not 0 <= getattr(job, name) <= 1:
            raise fail(name, "must be a fraction between 0 and 1")
    _check_base_url(job.base_url)
    provider_for(job.base_url, job.provider)  # refuses a provider it has no profile for
    if job.response_format is not None and job.response_format not in RESPONSE_FORMATS:
        raise fail("response_format", _one_of(RESPONSE_FORMATS))
    if job.schema_form is not None and job.schema_form not in SCHEMA_FORMS:
        raise fail("schema_form", _one_of(SCHEMA_FORMS))
    if job.json_fields and job.response_format != "json_object":
        raise JobError('request.json_fields needs request.response_format = "json_object"')
    _check_answer_schema(job)
    if job.gold_column is not None and not job.choices:
        raise JobError("labels.gold_column needs labels.choices")
    if job.template is not None and job.messages_column is not None:
        raise JobError("set request.template or request.messages_column, not both")
    if job.template is not None:
        _check_template(job.template)
    if job.model is not None and not job.model.strip():
        raise JobError(
            f"request.model must name a model, not {job.model!r}: leave it out for the default"
        )
    for model, price in job.prices.items():
        _check_price(model, price)
    if "messages" in job.extra or "model" in job.extra:
        raise JobError(
            "request.extra must not set 'messages' or 'model': use request.template / "
            "request.messages_column and request.model"
        )


def _check_answer_schema(job: Job) -> None:
    """output.schema against the other answer settings, and its columns against the rest."""
    from ..answers.schema import SchemaCheck
    from ..schema import RESULT_FIELDS, SAMPLE_FIELDS

    schema = job.output_schema
    if schema is None:
        return
    if job.json_fields:
        raise JobError("set output.schema or request.json_fields, not both")
    if job.choices:
        raise JobError(
            "set output.schema or labels.choices, not both: a label is an enum in the schema"
        )
    if job.response_format == "text":
        raise JobError('output.schema asks for JSON: remove request.response_format = "text"')
    taken = {f.name for f in (*RESULT_FIELDS, *SAMPLE_FIELDS)} | {"json", "label"}
    taken |= set(job.keep_columns)
    clash = sorted(set(schema["properties"]) & taken)
    if clash:
        raise JobError(
            f"output.schema property {', '.join(map(repr, clash))} has the name of a result "
            "column: rename it in the schema"
        )
    SchemaCheck(schema)  # compiles: an unusable schema is refused before anything is sent


def _one_of(values: tuple[str, ...]) -> str:
    return "must be " + " or ".join(f'"{value}"' for value in values)


def _check_base_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise JobError(f"endpoint.base_url is not a URL ({exc})") from None
    # Credentials first: the other message quotes the URL.
    if parts.username or parts.password:
        raise JobError(
            "endpoint.base_url must not hold credentials: put the key in the environment "
            "variable named by endpoint.api_key_env"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError(
            f"endpoint.base_url must be an http:// or https:// URL, not {url!r} "
            f"(for example {ZAI.default_base_url})"
        )


def _check_monitor_url(name: str, url: str | None) -> None:
    """A ping or Pushgateway URL: http(s) with a host. Its path may be a token, so the
    message shows only the scheme and host."""
    if url is None:
        return
    from ..ops.secrets import shown_url

    try:
        parts = urllib.parse.urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise JobError(
            f"{key_for(name)} must be an http:// or https:// URL, not {shown_url(url)!r}"
        )


PRICE_KEYS = ("input", "cached", "output")


def _check_price(model: str, price: Any) -> None:
    if not isinstance(price, Mapping):
        raise JobError(f"prices.{model} must be a table like {{ input = 0.6, output = 2.2 }}")
    for key, value in price.items():
        if key not in PRICE_KEYS:
            raise JobError(f"prices.{model}: unknown key '{key}' (known: {', '.join(PRICE_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise JobError(f"prices.{model}.{key} must be a number of USD per 1M tokens ≥ 0")


def _check_template(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise JobError(
            f"request.template cannot be read ({exc}); write literal braces as {{{{ and }}}}"
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or name[0].isdigit():
            raise JobError(
                "request.template fields must name input columns, like {text}; "
                f"'{{{name}}}' names none"
            )
        if conversion not in (None, "r", "s", "a"):
            raise JobError(f"request.template: '!{conversion}' is not a conversion (use !r or !s)")
        width = "".join(ch for ch in (spec or "").split(".")[0] if ch.isdigit())
        if width and int(width) > MAX_TEMPLATE_WIDTH:
            raise JobError(f"request.template: the width in '{{{name}:{spec}}}' is too large")
