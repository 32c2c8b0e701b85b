"""Label columns scored: each one's distribution and, against a gold column of the input or
another run, accuracy, Cohen's kappa, per-class precision/recall/F1 and the confusion matrix.

The metrics are computed from the confusion matrix in pure Python and equal scikit-learn's
(tests/test_quality.py compares them). The counting, joins and group-bys are Arrow's compute
functions, loaded with this module: a report of results without label columns (the page at the
end of most runs) never loads them (:mod:`.arrays`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline import gold_label

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


def normalised(values: pa.Array | pa.ChunkedArray, choices: Sequence[str]) -> pa.Array:
    """Gold labels as the choices they name (case, spacing, punctuation), as runs normalise
    answers; a value naming none is kept as written."""
    unique = pc.unique(values)
    mapped = pa.array(
        [None if v is None else gold_label(v, tuple(choices)) for v in unique.to_pylist()],
        pa.string(),
    )
    return mapped.take(pc.index_in(values, value_set=unique))


def label_counts(column: pa.Array | pa.ChunkedArray) -> Counter[str]:
    """How many rows hold each label (nulls left out)."""
    counts = pc.value_counts(column).to_pylist() if len(column) else []
    return Counter({c["values"]: c["counts"] for c in counts if c["values"] is not None})


def _pairs(table: pa.Table, truth: str, predicted: str) -> Counter[tuple[str, str]]:
    both = table.filter(pc.and_(pc.is_valid(table[truth]), pc.is_valid(table[predicted])))
    counted = both.group_by([truth, predicted], use_threads=False).aggregate([([], "count_all")])
    columns = (counted.column(name).to_pylist() for name in (truth, predicted, "count_all"))
    rows = zip(*columns, strict=True)
    return Counter({(t, p): n for t, p, n in rows})


def _distribution(column: pa.ChunkedArray) -> dict[str, int]:
    """Rows per label, the most frequent first."""
    counts = label_counts(column)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def label_quality(
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


def compare(this: pa.Table, other: pa.Table, name: str, location: str) -> Comparison:
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
