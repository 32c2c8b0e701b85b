"""The Job settings: one frozen object, validated on construction.

    job = Job(input_path="reviews.jsonl", output_dir="out/reviews", concurrency=8)
    job = Job.from_toml("jobs/sentiment.toml", concurrency=8)

A bad value raises JobError naming the setting as it is written in a job file
(``limits.concurrency``). Loading job files and merging flags is in :mod:`zbatch.jobfile`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import string
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import JobError
from .providers import ZAI, Provider, provider_for

# Z.AI's, the provider zbatch is built for (a profile of its own for OpenAI-compatible servers).
DEFAULT_MODEL = ZAI.default_model
DEFAULT_BASE_URL = ZAI.default_base_url
JSON_FIELD_KINDS = ("string", "int", "float", "bool", "json")
# Simulated answers go to their own OUTDIR, so they can never pass for a model's answers.
SIMULATED_SUFFIX = ".simulated"
# A template's format spec may pad a value: refuse widths that would inflate a prompt.
MAX_TEMPLATE_WIDTH = 10_000


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a run needs to know, resolved and validated."""

    # [input]
    input_path: str
    id_column: str | None = None  # None: "id", or "custom_id" on batch-format lines
    keep_columns: tuple[str, ...] = ()
    # [request]
    model: str | None = None  # None: the body's model or DEFAULT_MODEL
    force_model: bool = False  # the model was given on the command line
    system: str | None = None
    template: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # template column -> fallback
    prompt_column: str = "prompt"
    messages_column: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    thinking: bool | None = None
    response_format: str | None = None
    json_fields: tuple[tuple[str, str], ...] = ()  # (name, kind); "name:kind" strings accepted
    extra: Mapping[str, Any] = field(default_factory=dict)
    # [endpoint]
    base_url: str = DEFAULT_BASE_URL
    provider: str | None = None  # "zai" | "openai"; None: the one base_url points at
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
    down_after: float = 300.0  # seconds without an answer before the endpoint counts as down
    max_cost: float | None = None  # USD for the OUTDIR, all runs together
    hedge: bool = True  # re-send the slow tail's stuck attempts once the input is used up
    quota_wait_seconds: float = 3600.0  # the most --wait-for-quota waits for the quota in all
    # [labels]
    choices: tuple[str, ...] = ()
    label_retries: int = 1
    gold_column: str | None = None  # reference labels for some rows: agreement is reported
    # [output]
    output_dir: str
    part_rows: int = 50_000
    part_seconds: float = 30.0
    journal: bool = True  # every answer durable within ~50 ms, before parts commit it
    # [run]
    dedupe: bool = True  # send identical deterministic requests once (zbatch.dedupe)
    log_every: float = 30.0
    grace_seconds: float = 10.0
    mode: str = "online"  # or "batch": the provider's Batch API (zbatch.batch)
    poll_seconds: float = 30.0
    batch_max_rows: int = 50_000
    batch_max_bytes: int = 100 * 1024 * 1024
    batch_discount: float = 0.5  # batch price as a fraction of the live price
    finish_online: bool = False  # send what batches left unanswered live afterwards
    # [prices]: model -> {"input": .., "cached": .., "output": ..} in USD per 1M tokens
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # [simulate]
    simulate: bool = False
    simulate_latency: float = 0.05
    simulate_rate_limited: float = 0.02
    simulate_server_error: float = 0.01
    simulate_content_filter: float = 0.0

    def __post_init__(self) -> None:
        hints = _hints()
        for f in dataclasses.fields(self):
            value = _fit(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        _check(self)
        if self.simulate and not self.output_dir.rstrip("/").endswith(SIMULATED_SUFFIX):
            object.__setattr__(self, "output_dir", self.output_dir.rstrip("/") + SIMULATED_SUFFIX)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str] | None, **overrides: Any) -> Job:
        """Load a job file (or none) and apply overrides named like the fields, which win."""
        from .jobfile import load_job

        return load_job(path, overrides)

    @property
    def profile(self) -> Provider:
        """The provider's profile (error codes, hints, prices): endpoint.provider, else the
        one base_url points at."""
        return provider_for(self.base_url, self.provider)

    @property
    def effective_model(self) -> str:
        return self.model or DEFAULT_MODEL

    def fingerprint(self) -> str:
        """A digest of the settings that shape a request; resume refuses a change."""
        return _digest(self.shaping())

    def fingerprints(self) -> tuple[str, str]:
        """:meth:`fingerprint`, and the one versions before keep columns were left out of it
        gave the same settings: an OUTDIR such a version wrote holds that one."""
        return self.fingerprint(), _digest({**self.shaping(), "keep_columns": self.keep_columns})

    def shaping(self) -> dict[str, Any]:
        """The settings that shape a request, as job.json stores them."""
        shaping = {name: self._jsonable(name) for name in FINGERPRINTED}
        shaping["model"] = self.effective_model
        if not self.defaults:  # a setting newer than most OUTDIRs: absent when unused, so
            del shaping["defaults"]  # their fingerprints stay what they were
        if self.id_column is not None:  # the same: absent unless set
            shaping["id_column"] = self.id_column
        if self.simulate:  # only then: real runs keep the fingerprints they always had
            shaping["simulated"] = True
        return shaping

    def to_json(self) -> dict[str, Any]:
        """The resolved settings as stored in job.json (never the API key itself)."""
        return {f.name: self._jsonable(f.name) for f in dataclasses.fields(self)}

    def _jsonable(self, name: str) -> Any:
        if name == "json_fields":  # as a job file writes them
            return [f"{field_name}:{kind}" for field_name, kind in self.json_fields]
        return _jsonable(getattr(self, name))


# Settings that change what is sent or the result schema: changing one against an existing
# OUTDIR is refused (without --force), so results/ never mixes two requests or two schemas.
# Not keep_columns: a result's keep columns come from its input row, whatever was asked, so a
# new one widens the results (zbatch.results fills the earlier rows in from the input).
FINGERPRINTED = (
    "model",
    "system",
    "template",
    "defaults",
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
)


def _digest(shaping: Mapping[str, Any]) -> str:
    blob = json.dumps(_jsonable(shaping), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def key_for(name: str) -> str:
    """A field's name as a job file writes it ("limits.concurrency")."""
    from .jobfile import key_for

    return key_for(name)


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Job)


def _fit(name: str, value: Any, hint: Any) -> Any:
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
)
_NOT_NEGATIVE = ("max_retries", "label_retries", "grace_seconds", "backoff_cap", "simulate_latency")
_FINITE = (
    "timeout",
    "max_attempt_seconds",
    "part_seconds",
    "log_every",
    "grace_seconds",
    "down_after",
    "quota_wait_seconds",
    "poll_seconds",
)


def _check(job: Job) -> None:
    def fail(name: str, what: str) -> JobError:
        return JobError(f"{key_for(name)} {what}, not {getattr(job, name)!r}")

    for name in ("input_path", "output_dir"):
        if not getattr(job, name):
            flag = "--input" if name == "input_path" else "--output"
            raise JobError(f"{key_for(name)} is not set: set it in the job file or pass {flag}")
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
    if job.mode not in ("online", "batch"):
        raise fail("mode", 'must be "online" or "batch"')
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
    if job.response_format not in (None, "json_object", "text"):
        raise fail("response_format", 'must be "json_object" or "text"')
    if job.json_fields and job.response_format != "json_object":
        raise JobError('request.json_fields needs request.response_format = "json_object"')
    if job.gold_column is not None and not job.choices:
        raise JobError("labels.gold_column needs labels.choices")
    if job.template is not None and job.messages_column is not None:
        raise JobError("set request.template or request.messages_column, not both")
    if job.template is not None:
        _check_template(job.template)
    for model, price in job.prices.items():
        _check_price(model, price)
    if "messages" in job.extra or "model" in job.extra:
        raise JobError(
            "request.extra must not set 'messages' or 'model': use request.template / "
            "request.messages_column and request.model"
        )


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
            f"(for example {DEFAULT_BASE_URL})"
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
