"""`zbatch status`: what an output directory holds, as typed figures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from .. import prompt
from ..batch.ledger import ABANDONED, describe, open_batches, reserved_usd
from ..errors import JobError
from ..job.settings import DEFAULT_MODEL
from ..ops.manifest import shard_manifests, view
from ..pipeline import gold_label
from ..pricing import Price, cost, discounted, price_for
from ..providers import provider_for
from ..source import count_rows, open_input
from ..stats import Agreement
from ..store import RESULTS, OutputDir, Parts
from ..store.state import ResumeState
from .arrays import flags, numbers


@dataclass(frozen=True)
class Tokens:
    prompt: int = 0
    completion: int = 0
    cached: int = 0


@dataclass(frozen=True)
class LastRun:
    outcome: str
    exit_code: int | None
    ended_at: str | None = None


@dataclass(frozen=True)
class ShardRun:
    """One shard's last run, from its manifest (``last_run`` None: it has not run yet)."""

    shard: str  # "3/8"
    last_run: LastRun | None


@dataclass(frozen=True)
class Status:
    """Counts, tokens, cost and the last run's outcome of an output directory."""

    outdir: str
    input_rows: int | None  # None when the input cannot be found any more
    done: int
    failed: int  # ids whose latest outcome is an error, as a run's summary counts them
    failed_retryable: int  # of those, the ones the next run sends again
    tokens: Tokens
    cost_usd: float | None  # every billed answer of every run; None when unpriced
    max_cost: float | None = None  # the budget (limits.max_cost), when one is set
    labels: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # failed ids by error_type
    last_run: LastRun | None = None
    simulated: bool = False  # the answers came from --simulate, not a model
    active: list[str] = field(default_factory=list)  # runs under way: "pid N on HOST since T"
    uncommitted: int = 0  # finished rows of runs under way, in their journal, not yet in parts
    gold: Agreement | None = None  # labels against labels.gold_column, over committed rows
    batches: list[dict[str, Any]] = field(default_factory=list)  # batch mode: see batch.mode
    # max_cost: the live writers' reservations (writers, reserved_usd, unsettled_usd) and the
    # open batches' worst cases (batches_usd): spend + these is what the budget binds
    reserved: dict[str, Any] | None = None
    # Sharded runs: each shard's last run; last_run is then the view over them all.
    shards: list[ShardRun] = field(default_factory=list)
    # Rows answered from the response cache, over committed rows: hits, saved_tokens, saved_usd.
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> int | None:
        if self.input_rows is None:
            return None
        return max(0, self.input_rows - self.done - self.failed)

    def to_json(self) -> dict[str, Any]:
        gold = None if self.gold is None else self.gold.to_json()
        return {**asdict(self), "pending": self.pending, "gold": gold}


def read_status(outdir: OutputDir) -> Status:
    """Read the figures of an OUTDIR: only the id, token and label columns are read."""
    settings = outdir.read_job()["settings"]
    results = outdir.parts(RESULTS)
    done, state = outdir.count_state()
    if any(row_id.startswith("?") for row_id in state.latest_error):
        errored = pa.array(list(state.latest_error), pa.string())
        ids = results.column("id", pa.string())
        from .outcomes import fixed_places  # Arrow's compute functions: rare, see .arrays

        for place in fixed_places(settings, ids, errored).to_pylist():
            del state.latest_error[place]  # fixed since, and settled under its real id
    counted = {"prompt": 0, "completion": 0, "cached": 0}
    labels: Counter[str] = Counter()
    columns = ["attempts", *(f"{key}_tokens" for key in counted)]
    if "label" in results.schema.names:
        columns.append("label")
        from .labels import label_counts  # Arrow's compute functions: label columns only
    saved = {"prompt": 0, "completion": 0, "cached": 0}
    hits = 0
    if "cached" in results.schema.names:
        columns.append("cached")
    for batch in results.batches(columns):  # one pass over the parts for all these columns
        # A row with attempts 0 took an identical request's answer: its tokens were not paid.
        paid = numbers(batch.column("attempts")) > 0
        # Rows the response cache answered: bought by an earlier run.
        cached = flags(batch.column("cached")) if "cached" in columns else None
        for key in counted:
            used = numbers(batch.column(f"{key}_tokens"))
            counted[key] += int(used[paid].sum())
            if cached is not None:
                saved[key] += int(used[cached].sum())
        if cached is not None:
            hits += int(cached.sum())
        if "label" in columns:
            labels.update(label_counts(batch.column("label")))
    tokens = Tokens(**counted)
    try:
        input_rows: int | None = count_rows(open_input(settings["input_path"]).paths)
    except JobError:
        input_rows = None
    price = settings_price(settings)
    # The ledger counts every billed answer (failed checks, re-asks, older generations);
    # an OUTDIR from before the ledger has only its results' tokens to go by.
    ledger = outdir.total_spend()
    if ledger is not None:
        spent: float | None = ledger.usd
    else:
        spent = cost(price, tokens.prompt, tokens.cached, tokens.completion)
    last_run, shards = _last_runs(outdir)
    saved_usd = cost(price, saved["prompt"], saved["cached"], saved["completion"])
    cache = {
        "hits": hits,
        "saved_tokens": saved["prompt"] + saved["completion"],
        "saved_usd": None if saved_usd is None else round(saved_usd, 6),
    }
    return Status(
        outdir=outdir.location,
        input_rows=input_rows,
        done=done,
        failed=state.failed + state.duplicate_rows,
        failed_retryable=state.failed_retryable,
        tokens=tokens,
        cost_usd=None if spent is None else round(spent, 6),
        max_cost=settings.get("max_cost"),
        labels=dict(labels),
        errors=_error_counts(state),
        simulated=bool(settings.get("simulate")),
        active=outdir.active_runs(),
        uncommitted=outdir.uncommitted_rows(),
        gold=_agreement(settings, results) if settings.get("gold_column") else None,
        last_run=last_run,
        # A file that never reached the provider holds nothing: its rows are counted above.
        batches=[describe(s) for s in open_batches(outdir.storage) if s.state != ABANDONED],
        reserved=None if settings.get("max_cost") is None else _reserved(outdir),
        shards=shards,
        cache=cache,
    )


def _last_runs(outdir: OutputDir) -> tuple[LastRun | None, list[ShardRun]]:
    """The last run, and each shard's when the OUTDIR was last run in shards: then the last
    run is the view over all of them, read from their own manifests (summary.json may miss a
    shard that ended at the same moment as another)."""
    manifests = shard_manifests(outdir)
    if not manifests:
        summary = outdir.read_summary()
        if summary is None:
            return None, []
        return _last_run(summary), []
    count = int(str(manifests[0]["shard"]).split("/")[1])
    by_shard = {str(m["shard"]): m for m in manifests}
    shards = []
    for index in range(count):
        name = f"{index}/{count}"
        shards.append(ShardRun(name, _last_run(by_shard[name]) if name in by_shard else None))
    return _last_run(view(manifests, count)), shards


def _last_run(manifest: dict[str, Any]) -> LastRun:
    return LastRun(
        manifest.get("outcome", "unknown"), manifest.get("exit_code"), manifest.get("ended_at")
    )


def _error_counts(state: ResumeState) -> dict[str, int]:
    """Failed rows by error_type, as a run's summary counts them: each id's open error, and
    each input row that repeated an id."""
    counts = Counter(kind for kind, _ in state.open_errors().values())
    if state.duplicate_rows:
        counts["duplicate_id"] += state.duplicate_rows
    return dict(counts)


def settings_price(settings: Mapping[str, Any]) -> Price | None:
    """The price a job paid per 1M tokens, from its job.json settings."""
    model = settings.get("model") or DEFAULT_MODEL
    table = provider_for(settings["base_url"], settings.get("provider")).prices
    price = price_for(model, settings.get("prices") or {}, table)
    if settings.get("mode") == "batch":
        price = discounted(price, settings.get("batch_discount", 1.0))
    return price


def _reserved(outdir: OutputDir) -> dict[str, Any]:
    figures = outdir.reservations("").figures()
    figures["batches_usd"] = round(reserved_usd(outdir.storage), 6)
    return figures


def _agreement(settings: dict[str, Any], results: Parts) -> Agreement | None:
    """Committed labels against the input's reference labels, joined by id."""
    column, choices = settings["gold_column"], tuple(settings.get("choices") or ())
    try:
        rows = open_input(settings["input_path"]).rows()
        gold = {}
        for raw in rows:
            if raw.data is not None and raw.data.get(column) is not None:
                row_id = prompt.row_id(raw.data, settings.get("id_column"))
                if row_id is not None:
                    gold[row_id] = gold_label(raw.data[column], choices)
    except JobError:
        return None
    agreement = Agreement()
    if not gold or not results.names:
        return agreement
    for batch in results.batches(["id", "label"]):
        for row_id, label in zip(*(batch.column(i).to_pylist() for i in range(2)), strict=True):
            if row_id in gold and label is not None:
                agreement.pairs[gold[row_id], label] += 1
    return agreement
