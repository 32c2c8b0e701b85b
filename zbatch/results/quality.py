"""`zbatch report`: the figures of an OUTDIR a labelling team looks at.

Counts, spend and tokens (from :func:`zbatch.results.status.read_status`), what the response cache
saved, latency percentiles and histogram, throughput and spend over time, and for each label
column (``label``, and the enum fields of an ``[output] schema``): the distribution and, against
a gold column of the input or another run, accuracy, Cohen's kappa, per-class
precision/recall/F1 and the confusion matrix. The metrics are computed from the confusion
matrix in pure Python and equal scikit-learn's (tests/test_quality.py compares them).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import prompt
from ..errors import JobError
from ..pipeline import gold_label
from ..pricing import cost
from ..schema import RESULT_FIELDS
from ..source import open_input
from ..store import RESULTS, OutputDir, Parts
from .status import Status, read_status, settings_price

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
HISTOGRAM_BINS = 20
MAX_TIME_BUCKETS = 60
# Bucket widths for throughput over time, in seconds: the first that gives at most
# MAX_TIME_BUCKETS buckets.
BUCKET_SECONDS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)
SPEND_COLUMNS = ("attempts", "prompt_tokens", "cached_tokens", "completion_tokens", "cached")
# The result columns every run writes (and label, with labels.choices), by type.
ALWAYS = {field.name: field.type for field in RESULT_FIELDS} | {"label": pa.string()}
EXAMPLES = 20  # differing rows listed in a comparison (review lists them all)


@dataclass(frozen=True)
class ClassScore:
    """Precision, recall and F1 of one label (0 where undefined, as scikit-learn's
    ``zero_division=0``), and its support (gold rows of that label)."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """Two label columns compared row by row: ``truth`` (gold, or this run) against
    ``predicted``; confusion[i][j] counts rows with truth labels[i] and predicted labels[j]."""

    rows: int
    agreed: int
    accuracy: float | None
    kappa: float | None  # None where undefined (both sides a single, identical label)
    labels: list[str]
    confusion: list[list[int]]
    per_class: list[ClassScore]
    macro_f1: float | None
    weighted_f1: float | None

    @classmethod
    def of(cls, pairs: Mapping[tuple[str, str], int]) -> Scores:
        """The figures of (truth, predicted) -> rows."""
        labels = sorted({label for pair in pairs for label in pair})
        where = {label: i for i, label in enumerate(labels)}
        matrix = [[0] * len(labels) for _ in labels]
        for (truth, predicted), count in pairs.items():
            matrix[where[truth]][where[predicted]] += count
        rows = sum(pairs.values())
        agreed = sum(matrix[i][i] for i in range(len(labels)))
        truths = [sum(line) for line in matrix]
        predictions = [sum(line[j] for line in matrix) for j in range(len(labels))]
        per_class = []
        for i, label in enumerate(labels):
            precision = matrix[i][i] / predictions[i] if predictions[i] else 0.0
            recall = matrix[i][i] / truths[i] if truths[i] else 0.0
            both = precision + recall
            f1 = 2 * precision * recall / both if both else 0.0
            per_class.append(ClassScore(label, precision, recall, f1, truths[i]))
        kappa = None
        if rows:
            chance = sum(t * p for t, p in zip(truths, predictions, strict=True)) / rows / rows
            if chance != 1:
                kappa = (agreed / rows - chance) / (1 - chance)
        # The averages are over the labels the truth holds, as scikit-learn's are over y_true's
        # and y_pred's labels together: the same set, since labels is the union.
        macro = sum(c.f1 for c in per_class) / len(per_class) if per_class else None
        weighted = sum(c.f1 * c.support for c in per_class) / rows if rows else None
        return cls(
            rows=rows,
            agreed=agreed,
            accuracy=agreed / rows if rows else None,
            kappa=kappa,
            labels=labels,
            confusion=matrix,
            per_class=per_class,
            macro_f1=macro,
            weighted_f1=weighted,
        )


@dataclass(frozen=True)
class LabelQuality:
    """One label column: its distribution and, with a gold column, its scores against it."""

    field: str
    distribution: dict[str, int]
    gold_column: str | None = None
    gold_rows: int = 0  # rows with a gold label
    unanswered: int = 0  # of those, rows without an answer in this field (failed, pending)
    scores: Scores | None = None


@dataclass(frozen=True)
class Comparison:
    """One label column of this run against the same column of another run, by id."""

    field: str
    other: str  # the other OUTDIR
    scores: Scores  # truth: this run, predicted: the other run
    differing: int
    examples: list[dict[str, str]]  # the first EXAMPLES differing rows: id, this, other


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
    # The ids come with label fields only: a column of ten million ids is ~120 MB.
    labels = read_columns(results, ["id", *fields]) if fields else pa.table({})
    quality = []
    gold_table = None
    if gold is not None:
        gold_table = read_gold(settings, gold)
    scored = gold_field(fields, gold)
    for name, choices in fields.items():
        reference = gold_table if name == scored else None
        quality.append(_label_quality(labels, name, choices, gold, reference))
    comparisons = []
    if against is not None:
        other = against.parts(RESULTS)
        other_fields = [name for name in fields if name in other.schema.names]
        other_labels = read_columns(other, ["id", *other_fields])
        for name in other_fields:
            comparisons.append(_compare(labels, other_labels, name, against.location))
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


def normalised(values: pa.Array | pa.ChunkedArray, choices: Sequence[str]) -> pa.Array:
    """Gold labels as the choices they name (case, spacing, punctuation), as runs normalise
    answers; a value naming none is kept as written."""
    unique = pc.unique(values)
    mapped = pa.array(
        [None if v is None else gold_label(v, tuple(choices)) for v in unique.to_pylist()],
        pa.string(),
    )
    return mapped.take(pc.index_in(values, value_set=unique))


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


def _pairs(table: pa.Table, truth: str, predicted: str) -> Counter[tuple[str, str]]:
    both = table.filter(pc.and_(pc.is_valid(table[truth]), pc.is_valid(table[predicted])))
    counted = both.group_by([truth, predicted], use_threads=False).aggregate([([], "count_all")])
    columns = (counted.column(name).to_pylist() for name in (truth, predicted, "count_all"))
    rows = zip(*columns, strict=True)
    return Counter({(t, p): n for t, p, n in rows})


def _distribution(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column).to_pylist() if len(column) else []
    ordered = sorted(counts, key=lambda c: (-c["counts"], str(c["values"])))
    return {c["values"]: c["counts"] for c in ordered if c["values"] is not None}


def _label_quality(
    labels: pa.Table,
    name: str,
    choices: tuple[str, ...],
    gold: str | None,
    gold_table: pa.Table | None,
) -> LabelQuality:
    distribution = _distribution(labels.column(name))
    if gold_table is None:
        return LabelQuality(name, distribution)
    reference = gold_table.set_column(1, "gold", normalised(gold_table.column("gold"), choices))
    answers = labels.select(["id", name]).rename_columns(["id", "answer"])
    joined = reference.join(answers, "id", join_type="left outer", use_threads=False)
    unanswered = joined.num_rows - pc.count(joined.column("answer")).as_py()
    return LabelQuality(
        name,
        distribution,
        gold_column=gold,
        gold_rows=reference.num_rows,
        unanswered=unanswered,
        scores=Scores.of(_pairs(joined, "gold", "answer")),
    )


def _compare(this: pa.Table, other: pa.Table, name: str, location: str) -> Comparison:
    mine = this.select(["id", name]).rename_columns(["id", "this"])
    mine = mine.append_column("row", pa.array(range(mine.num_rows), pa.int64()))
    theirs = other.select(["id", name]).rename_columns(["id", "other"])
    joined = mine.join(theirs, "id", join_type="inner", use_threads=False)
    joined = joined.filter(pc.and_(pc.is_valid(joined["this"]), pc.is_valid(joined["other"])))
    differ = joined.filter(pc.not_equal(joined["this"], joined["other"]))
    # The examples in this run's commit order (a join's order is its own).
    first = differ.take(pc.sort_indices(differ["row"])).slice(0, EXAMPLES)
    examples = first.select(["id", "this", "other"]).to_pylist()
    return Comparison(
        name, location, Scores.of(_pairs(joined, "this", "other")), differ.num_rows, examples
    )


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
            latency = pc.drop_null(batch.column("latency_ms")).cast(pa.float64())
            for count in pc.value_counts(latency).to_pylist():
                timing.latencies[count["values"]] += count["counts"]
        if "completed_at" in columns:
            _add_seconds(timing, pa.Table.from_batches([batch]))
    return timing


def _add_seconds(timing: _Timing, answers: pa.Table) -> None:
    """A batch's answers and paid tokens per second of completed_at, into ``timing``."""
    answers = answers.filter(pc.is_valid(answers.column("completed_at")))
    if not answers.num_rows:
        return
    ms = answers.column("completed_at").cast(pa.int64())
    first, last = pc.min(ms).as_py(), pc.max(ms).as_py()
    if not timing.seconds or first < timing.first_ms:
        timing.first_ms = first
    if not timing.seconds or last > timing.last_ms:
        timing.last_ms = last
    paid = pc.greater(pc.fill_null(answers.column("attempts"), 0), 0)
    if "cached" in answers.column_names:
        paid = pc.and_(paid, pc.invert(pc.fill_null(answers.column("cached"), False)))

    def paid_tokens(name: str) -> pa.ChunkedArray:
        return pc.if_else(paid, pc.fill_null(answers.column(name), 0), 0)

    table = pa.table(
        {
            "second": pc.divide(ms, 1000),
            "prompt": paid_tokens("prompt_tokens"),
            "cached": paid_tokens("cached_tokens"),
            "completion": paid_tokens("completion_tokens"),
        }
    )
    sums = table.group_by("second", use_threads=False).aggregate(
        [([], "count_all"), ("prompt", "sum"), ("cached", "sum"), ("completion", "sum")]
    )
    names = ("count_all", "prompt_sum", "cached_sum", "completion_sum")
    for row in sums.to_pylist():
        into = timing.seconds.setdefault(row["second"], [0, 0, 0, 0])
        for at, name in enumerate(names):
            into[at] += row[name] or 0


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
        rows = pc.sum(read_columns(results, ["cached"]).column("cached")).as_py() or 0
    return Cache(
        rows=rows,
        hits=None if cached is None else cached.get("hits"),
        saved_usd=None if cached is None else cached.get("saved_usd"),
    )


def _samples(results: Parts) -> Samples | None:
    if "agreement" not in results.schema.names:
        return None
    column = pc.drop_null(read_columns(results, ["agreement"]).column("agreement"))
    unanimous = pc.sum(pc.greater_equal(column, 1.0)).as_py() or 0
    return Samples(
        rows=len(column),
        mean_agreement=pc.mean(column).as_py() if len(column) else None,
        unanimous=unanimous,
        split=len(column) - unanimous,
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
