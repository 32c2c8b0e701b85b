"""The Job settings: one frozen object, validated on construction.

    job = Job(input_path="reviews.jsonl", output_dir="out/reviews", concurrency=8)
    job = Job.from_toml("jobs/sentiment.toml", concurrency=8)

A bad value raises JobError naming the setting as it is written in a job file
(``limits.concurrency``). Loading job files and merging flags is in :mod:`zbatch.job.file`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..answers.schema import FIELD_KINDS, load_schema
from ..pricing import Price, discounted, nearest_model, no_price, price_for
from ..providers import ZAI, Provider, provider_for
from .rules import check, fit

# Z.AI's, the provider zbatch is built for (a profile of its own for OpenAI-compatible servers).
DEFAULT_MODEL = ZAI.default_model
DEFAULT_BASE_URL = ZAI.default_base_url
# Simulated answers go to their own OUTDIR, so they can never pass for a model's answers.
SIMULATED_SUFFIX = ".simulated"


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
    samples: int = 1  # answers per row: votes, the majority and its share
    extra: Mapping[str, Any] = field(default_factory=dict)
    # [endpoint]
    base_url: str = DEFAULT_BASE_URL
    provider: str | None = None  # "zai" | "openai"; None: the one base_url points at
    api_key_env: str = "ZAI_API_KEY"
    schema_form: str | None = None  # how output.schema is sent (SCHEMA_FORMS); None: the profile's
    n_choices: bool | None = None  # samples in one request with "n"; None: the profile's
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
    hedge: bool = False  # re-send the slow tail's stuck attempts (pays twice): opt-in
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
    # A JSON Schema every answer must match (a file, a table; from Python a dict or a Pydantic
    # model class): read into the schema itself on construction.
    output_schema: Mapping[str, Any] | None = None
    repair_attempts: int = 1  # asks again, the validation error fed back, before invalid_output
    report: bool = True  # OUTDIR/report.html at the end of a run (with zbatch[report])
    # [run]
    dedupe: bool = True  # send identical deterministic requests once (zbatch.online.dedupe)
    cache: str = "on"  # the response cache: "on" (deterministic requests), "all", "off"
    cache_path: str | None = None  # None: $XDG_CACHE_HOME/zbatch/responses.sqlite
    log_every: float = 30.0
    grace_seconds: float = 10.0
    mode: str = "online"  # or "batch": the provider's Batch API (zbatch.batch)
    poll_seconds: float = 30.0
    batch_max_rows: int = 50_000
    batch_max_bytes: int = 100 * 1024 * 1024
    batch_discount: float = 0.5  # batch price as a fraction of the live price
    finish_online: bool = False  # send what batches left unanswered live afterwards
    # flag only: create again the batches whose creation a provider without a listing cannot
    # confirm (zbatch.batch.mode)
    resubmit_unconfirmed: bool = False
    metrics_file: str | None = None  # a node_exporter textfile (.prom), see zbatch.ops
    pushgateway: str | None = None  # a Prometheus Pushgateway URL (may hold a token)
    metrics_every: float = 10.0  # seconds between metric writes / pushes during a run
    ping: str | None = None  # dead-man's-switch URL: /start, then itself or /<exit code>
    log_format: str = "plain"  # or "json": one JSON object a line on stderr and in run.log
    # [prices]: model -> {"input": .., "cached": .., "output": ..} in USD per 1M tokens
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # [simulate]
    simulate: bool = False
    simulate_latency: float = 0.05
    simulate_rate_limited: float = 0.02
    simulate_server_error: float = 0.01
    simulate_content_filter: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_schema", load_schema(self.output_schema))
        hints = _hints()
        for f in dataclasses.fields(self):
            value = fit(f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        check(self)
        if self.simulate and not self.output_dir.rstrip("/").endswith(SIMULATED_SUFFIX):
            object.__setattr__(self, "output_dir", self.output_dir.rstrip("/") + SIMULATED_SUFFIX)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str] | None, **overrides: Any) -> Job:
        """Load a job file (or none) and apply overrides named like the fields, which win."""
        from .file import load_job

        return load_job(path, overrides)

    @property
    def profile(self) -> Provider:
        """The provider's profile (error codes, hints, prices): endpoint.provider, else the
        one base_url points at."""
        return provider_for(self.base_url, self.provider)

    @property
    def answer_schema(self) -> Mapping[str, Any] | None:
        """The schema of a JSON answer: output.schema, else the json_fields of a
        json_object request (each a property, unchecked), else None (not JSON)."""
        if self.output_schema is not None:
            return self.output_schema
        if self.response_format != "json_object":
            return None
        fields = {name: FIELD_KINDS[kind] for name, kind in self.json_fields}
        return {"type": "object", "properties": fields}

    @property
    def effective_model(self) -> str:
        return self.model or DEFAULT_MODEL

    @property
    def samples_in_one_request(self) -> bool:
        """Whether ``samples`` > 1 is one request with ``n`` (endpoint.n_choices, else the
        profile's) rather than one request per sample."""
        one = self.n_choices if self.n_choices is not None else self.profile.n
        return self.samples > 1 and one

    @property
    def effective_schema_form(self) -> str:
        """How output.schema is sent: endpoint.schema_form, else the provider profile's."""
        return self.schema_form or self.profile.schema_form

    @property
    def price(self) -> Price | None:
        """What a run pays per 1M tokens: [prices] over the profile's table, at
        batch_discount of it in batch mode; None when neither knows the model."""
        price = price_for(self.effective_model, self.prices, self.profile.prices)
        return discounted(price, self.batch_discount) if self.mode == "batch" else price

    @property
    def near_model(self) -> str | None:
        """For a model without a price: the priced model whose name is nearest, if any."""
        if self.price is not None:
            return None
        return nearest_model(self.effective_model, [*self.prices, *self.profile.prices])

    @property
    def no_price(self) -> str | None:
        """When no price is known for the model: what to say (the nearest known name too)."""
        if self.price is not None:
            return None
        return no_price(self.effective_model, self.near_model)

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
        for name, unset in (("output_schema", None), ("samples", 1)):
            if getattr(self, name) == unset:  # newer settings: absent unless set
                del shaping[name]
        if self.id_column is not None:  # the same: absent unless set
            shaping["id_column"] = self.id_column
        if self.simulate:  # only then: real runs keep the fingerprints they always had
            shaping["simulated"] = True
        return shaping

    def to_json(self) -> dict[str, Any]:
        """The resolved settings as stored in job.json (never the API key itself, nor the
        token a ping or Pushgateway URL may hold)."""
        from ..ops.secrets import shown_url

        settings = {f.name: self._jsonable(f.name) for f in dataclasses.fields(self)}
        for name in SECRET_URLS:
            settings[name] = shown_url(settings[name])
        return settings

    def _jsonable(self, name: str) -> Any:
        if name == "json_fields":  # as a job file writes them
            return [f"{field_name}:{kind}" for field_name, kind in self.json_fields]
        return _jsonable(getattr(self, name))


# Settings that change what is sent or the result schema: changing one against an existing
# OUTDIR is refused (without --force), so results/ never mixes two requests or two schemas.
# Not keep_columns: a result's keep columns come from its input row, whatever was asked, so a
# new one widens the results (zbatch.results.outcomes fills the earlier rows in from the input).
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
    "output_schema",
    "samples",
)


# Settings whose URL may carry a token (healthchecks.io's ping URLs are the secret itself).
SECRET_URLS = ("ping", "pushgateway")


def _digest(shaping: Mapping[str, Any]) -> str:
    blob = json.dumps(_jsonable(shaping), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Job)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
