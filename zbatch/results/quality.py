"""`zbatch report`: the figures of an OUTDIR a labelling team looks at.

Counts, spend and tokens (from :func:`zbatch.results.status.read_status`), what the response cache
saved, latency percentiles and histogram, throughput and spend over time, and for each label
column (``label``, and the enum fields of an ``[output] schema``): the distribution and, against
a gold column of the input or another run, accuracy, Cohen's kappa, per-class
precision/recall/F1 and the confusion matrix (:mod:`.labels`).

Only the columns needed are read from the result parts, so a million rows take seconds
(bench/report_scale.py).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .. import prompt
from ..errors import JobError
from ..pricing import cost
from ..schema import RESULT_FIELDS
from ..source import open_input
from ..store import RESULTS, OutputDir, Parts
from .arrays import flags, numbers, present, reals
from .status import Status, read_status, settings_price

if TYPE_CHECKING:  # label columns only: Arrow's compute functions (see .arrays)
    from .labels import Comparison, LabelQuality

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
HISTOGRAM_BINS = 20
MAX_TIME_BUCKETS = 60
# Bucket widths for throughput over time, in seconds: the first that gives at most
# MAX_TIME_BUCKETS buckets.
BUCKET_SECONDS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)
SPEND_COLUMNS = ("attempts", "prompt_tokens", "cached_tokens", "completion_tokens", "cached")
# The result columns every run writes (and label, with labels.choices), by type.
ALWAYS = {field.name: field.type for field in RESULT_FIELDS} | {"label": pa.string()}


@dataclass(frozen=True)
class Latency:
    """Latency of the successful attempt of each answer, in ms; percentiles interpolated
    linearly (numpy's default); ``edges`` are HISTOGRAM_BINS equal bins from min to max (the
    last one closed), as ``numpy.histogram`` makes them."""

    rows: int
    mean: float | None
    percentiles: dict[str, float]  # "p50" -> ms
    max: int | None
    edges: list[float]
    counts: list[int]


@dataclass(frozen=True)
class TimeBucket:
    start: str  # ISO 8601, UTC
    rows: int
    tokens: int
    cost_usd: float | None  # at the job's prices, of the answers paid for (not cache/dedupe)


@dataclass(frozen=True)
class Cache:
    """What the response cache saved: answers served from it and their price."""

    rows: int  # result rows with cached = true
    hits: int | None  # the last run's summary.json figures, when it has them
    saved_usd: float | None


@dataclass(frozen=True)
class Samples:
    """samples = K: how far the K answers of each row agreed (the majority's share)."""

    rows: int
    mean_agreement: float | None
    unanimous: int
    split: int  # rows whose answers did not all agree


@dataclass(frozen=True)
class Report:
    """Everything ``zbatch report`` shows; :meth:`to_dict` is what ``--json`` prints."""

    status: Status
    latency: Latency
    bucket_seconds: int
    throughput: list[TimeBucket]
    cache: Cache | None
    samples: Samples | None
    labels: list[LabelQuality] = field(default_factory=list)
    against: list[Comparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["status"] = self.status.to_json()
        return figures


def build_report(
    outdir: OutputDir, *, gold: str | None = None, against: OutputDir | None = None
) -> Report:
    """The report of ``outdir``; ``gold`` names an input column of reference labels (default:
    the job's labels.gold_column); ``against`` another OUTDIR of the same rows."""
    settings = outdir.read_job()["settings"]
    if against is not None:
        against.read_job()  # a folder that is not an OUTDIR is refused, naming it
    status = read_status(outdir)
    results = outdir.parts(RESULTS)
    fields = label_fields(settings, results.schema)
    timing = _timing(results)
    gold = gold or settings.get("gold_column")
    gold_table = read_gold(settings, gold) if gold is not None else None
    quality: list[LabelQuality] = []
    comparisons: list[Comparison] = []
    if fields:
        from .labels import compare, label_quality  # Arrow's compute functions: labels only

        # The ids come with label fields only: a column of ten million ids is ~120 MB.
        labels = read_columns(results, ["id", *fields])
        scored = gold_field(fields, gold)
        for name, choices in fields.items():
            reference = gold_table if name == scored else None
            quality.append(label_quality(labels, name, choices, gold, reference))
        if against is not None:
            other = against.parts(RESULTS)
            other_fields = [name for name in fields if name in other.schema.names]
            other_labels = read_columns(other, ["id", *other_fields])
            for name in other_fields:
                comparisons.append(compare(labels, other_labels, name, against.location))
    bucket, buckets = _throughput(timing, settings)
    return Report(
        status=status,
        latency=_latency(timing.latencies),
        bucket_seconds=bucket,
        throughput=buckets,
        cache=_cache(results, outdir.read_summary() or {}),
        samples=_samples(results),
        labels=quality,
        against=comparisons,
    )


def label_fields(settings: Mapping[str, Any], schema: pa.Schema) -> dict[str, tuple[str, ...]]:
    """The label columns the results hold, each with its allowed labels: ``label`` (with
    labels.choices), then each enum property of an ``[output] schema`` given inline."""
    fields: dict[str, tuple[str, ...]] = {}
    if "label" in schema.names or settings.get("choices"):
        fields["label"] = tuple(settings.get("choices") or ())
    spec = settings.get("schema")
    if isinstance(spec, str):  # a schema file: job.json may keep its path
        try:
            with open(spec, encoding="utf-8") as handle:
                spec = json.load(handle)
        except (OSError, ValueError):
            spec = None
    properties = spec.get("properties") if isinstance(spec, dict) else None
    for name, prop in (properties or {}).items():
        enum = prop.get("enum") if isinstance(prop, dict) else None
        if (
            isinstance(enum, list)
            and name in schema.names
            and pa.types.is_string(schema.field(name).type)
        ):
            fields[name] = tuple(str(value) for value in enum)
    return fields


def gold_field(fields: Mapping[str, tuple[str, ...]], gold: str | None) -> str | None:
    """The label column a gold column scores: the enum field of its name, else ``label``,
    else the first enum field."""
    if gold is None or not fields:
        return None
    if gold in fields:
        return gold
    return "label" if "label" in fields else next(iter(fields))


def read_gold(settings: Mapping[str, Any], column: str) -> pa.Table:
    """The input's ``column`` by id (rows without a value left out), as a table (id, gold);
    JobError naming the column when the input has no such column."""
    ids: list[str] = []
    values: list[str] = []
    seen = False
    for raw in open_input(settings["input_path"]).rows():
        if raw.data is None:
            continue
        seen = seen or column in raw.data
        value = raw.data.get(column)
        row_id = prompt.row_id(raw.data, settings.get("id_column"))
        if value is not None and row_id is not None:
            ids.append(row_id)
            values.append(value if isinstance(value, str) else str(value))
    if not seen:
        raise JobError(
            f"--gold {column}: the input {settings['input_path']} has no column {column!r}"
        )
    return pa.table({"id": pa.array(ids, pa.string()), "gold": pa.array(values, pa.string())})


def read_columns(parts: Parts, columns: Iterable[str]) -> pa.Table:
    """The ``columns`` of committed parts, as one table: those the parts lack are left out,
    but for the result columns every run writes (and ``label``), which are empty when no
    part was committed yet (every row failed)."""
    present = [name for name in dict.fromkeys(columns) if name in parts.schema.names]
    schema = pa.schema([parts.schema.field(name) for name in present])
    if not parts.names:
        table = schema.empty_table()
    else:
        table = pa.Table.from_batches(list(parts.batches(present)), schema)
    for name in columns:
        if name not in table.column_names and name in ALWAYS:
            table = table.append_column(pa.field(name, ALWAYS[name]), pa.nulls(0, ALWAYS[name]))
    return table


@dataclass
class _Timing:
    """What the latency and throughput figures need, gathered a batch at a time (so a report
    on ten million answers holds no column of them): how many answers took each latency, and
    per second of completed_at the answers and their paid tokens."""

    latencies: Counter[float] = field(default_factory=Counter)  # ms -> answers
    seconds: dict[int, list[int]] = field(default_factory=dict)  # -> rows, prompt, cached, out
    first_ms: int = 0
    last_ms: int = 0


def _timing(results: Parts) -> _Timing:
    timing = _Timing()
    names = results.schema.names
    columns = [name for name in ("latency_ms", "completed_at", *SPEND_COLUMNS) if name in names]
    if not results.names or not columns:
        return timing
    for batch in results.batches(columns):
        if "latency_ms" in columns:
            values, counts = np.unique(reals(batch.column("latency_ms")), return_counts=True)
            timing.latencies.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        if "completed_at" in columns:
            _add_seconds(timing, batch)
    return timing


def _add_seconds(timing: _Timing, answers: pa.RecordBatch) -> None:
    """A batch's answers and paid tokens per second of completed_at, into ``timing``."""
    completed = present(answers.column("completed_at"))
    if not completed.any():
        return
    ms = numbers(answers.column("completed_at"))[completed]
    first, last = int(ms.min()), int(ms.max())
    if not timing.seconds or first < timing.first_ms:
        timing.first_ms = first
    if not timing.seconds or last > timing.last_ms:
        timing.last_ms = last
    paid = numbers(answers.column("attempts")) > 0
    if "cached" in answers.schema.names:
        paid &= ~flags(answers.column("cached"))
    seconds, at = np.unique(ms // 1000, return_inverse=True)

    def per_second(name: str) -> list[int]:
        tokens = np.where(paid, numbers(answers.column(name)), 0)[completed]
        sums: list[int] = (
            np.bincount(at, weights=tokens, minlength=len(seconds)).astype(np.int64).tolist()
        )
        return sums

    sums = zip(
        np.bincount(at).tolist(),
        per_second("prompt_tokens"),
        per_second("cached_tokens"),
        per_second("completion_tokens"),
        strict=True,
    )
    for second, figures in zip(seconds.tolist(), sums, strict=True):
        into = timing.seconds.setdefault(second, [0, 0, 0, 0])
        for place, value in enumerate(figures):
            into[place] += value


def _latency(counts: Counter[float]) -> Latency:
    """The latency figures from how many answers took each latency: the percentiles are
    numpy's linear interpolation between the two values around q * (rows - 1)."""
    if not counts:
        return Latency(0, None, {}, None, [], [])
    values = sorted(counts)
    rows = sum(counts.values())
    ends = list(itertools.accumulate(counts[value] for value in values))  # last index + 1

    def at(index: int) -> float:
        return values[bisect.bisect_right(ends, index)]

    percentiles = {}
    for q in PERCENTILES:
        position = q * (rows - 1)
        below = math.floor(position)
        low_value, high_value = at(below), at(min(below + 1, rows - 1))
        percentiles[f"p{round(q * 100)}"] = low_value + (high_value - low_value) * (
            position - below
        )
    low, high = values[0], values[-1]
    width = (high - low) / HISTOGRAM_BINS if high > low else 0.0
    edges = [low + width * i for i in range(HISTOGRAM_BINS + 1)]
    bins = [0] * HISTOGRAM_BINS
    if width:
        for value in values:
            bins[min(math.floor((value - low) / width), HISTOGRAM_BINS - 1)] += counts[value]
    else:  # one value: numpy puts it in the middle bin of [v - 0.5, v + 0.5]
        edges = [low - 0.5 + i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
        bins[HISTOGRAM_BINS // 2] = rows
    return Latency(
        rows=rows,
        mean=math.fsum(value * counts[value] for value in values) / rows,
        percentiles=percentiles,
        max=int(high),
        edges=edges,
        counts=bins,
    )


def _throughput(timing: _Timing, settings: Mapping[str, Any]) -> tuple[int, list[TimeBucket]]:
    """Answers per time bucket of completed_at, with their tokens and price. A bucket is a
    whole number of seconds starting on a multiple of its width, so each second of
    ``timing`` falls in one bucket."""
    if not timing.seconds:
        return BUCKET_SECONDS[0], []
    first, last = timing.first_ms, timing.last_ms
    width = next(
        (s for s in BUCKET_SECONDS if (last - first) // (s * 1000) < MAX_TIME_BUCKETS),
        BUCKET_SECONDS[-1],
    )
    start = first - first % (width * 1000)
    by_bucket: dict[int, list[int]] = {}
    for second, sums in timing.seconds.items():
        into = by_bucket.setdefault((second * 1000 - start) // (width * 1000), [0, 0, 0, 0])
        for at, value in enumerate(sums):
            into[at] += value
    price = settings_price(settings)
    buckets = []
    for index in range(max(by_bucket) + 1):
        rows, prompt_tokens, cached, completion = by_bucket.get(index, [0, 0, 0, 0])
        moment = dt.datetime.fromtimestamp((start + index * width * 1000) / 1000, dt.UTC)
        buckets.append(
            TimeBucket(
                start=moment.isoformat().replace("+00:00", "Z"),
                rows=rows,
                tokens=prompt_tokens + completion,
                cost_usd=cost(price, prompt_tokens, cached, completion),
            )
        )
    return width, buckets


def _cache(results: Parts, summary: Mapping[str, Any]) -> Cache | None:
    cached = summary.get("cache") if isinstance(summary.get("cache"), dict) else None
    if "cached" not in results.schema.names and cached is None:
        return None  # an OUTDIR from before the response cache
    rows = 0
    if "cached" in results.schema.names:
        rows = sum(int(flags(batch.column(0)).sum()) for batch in results.batches(["cached"]))
    return Cache(
        rows=rows,
        hits=None if cached is None else cached.get("hits"),
        saved_usd=None if cached is None else cached.get("saved_usd"),
    )


def _samples(results: Parts) -> Samples | None:
    if "agreement" not in results.schema.names:
        return None
    shares = [reals(batch.column(0)) for batch in results.batches(["agreement"])]
    agreement = np.concatenate(shares) if shares else np.zeros(0)
    unanimous = int(np.count_nonzero(agreement >= 1.0))
    return Samples(
        rows=len(agreement),
        mean_agreement=float(agreement.mean()) if len(agreement) else None,
        unanimous=unanimous,
        split=len(agreement) - unanimous,
    )


def figure_rows(report: Report) -> list[tuple[str, object]]:
    """Latency, throughput, cache and samples figures as (name, value) rows."""
    latency = report.latency
    rows: list[tuple[str, object]] = []
    if latency.rows:
        shown = ", ".join(f"{name} {ms:.0f}" for name, ms in latency.percentiles.items())
        rows.append(("latency ms", f"{shown}, max {latency.max} ({latency.rows} answers)"))
    if report.throughput:
        busiest = max(bucket.rows for bucket in report.throughput)
        rows.append(
            (
                "throughput",
                f"{busiest / report.bucket_seconds:.2f} answers/s at the busiest "
                f"{report.bucket_seconds} s, over {len(report.throughput)} buckets",
            )
        )
    if report.cache is not None:
        saved = report.cache.saved_usd
        rows.append(
            (
                "from the cache",
                f"{report.cache.rows} answers"
                + ("" if saved is None else f", last run saved ${saved:.4f}"),
            )
        )
    if report.samples is not None and report.samples.mean_agreement is not None:
        samples = report.samples
        rows.append(
            (
                "samples agreement",
                f"mean {samples.mean_agreement:.1%}, {samples.split} of {samples.rows} rows split",
            )
        )
    return rows
