"""`zbatch report` on a terminal: the figures of :class:`zbatch.results.quality.Report` as text."""

from __future__ import annotations

from ..results.labels import Comparison, LabelQuality, Scores
from ..results.quality import Report, figure_rows
from .format import format_status, table


def format_report(report: Report) -> str:
    """The status table, then latency, throughput, cache, samples and each label's quality."""
    parts = [format_status(report.status)]
    rows = figure_rows(report)
    if rows:
        parts.append(table(rows))
    parts.extend(_label(quality) for quality in report.labels)
    parts.extend(_comparison(comparison) for comparison in report.against)
    return "\n\n".join(parts)


def _label(quality: LabelQuality) -> str:
    lines = [f"{quality.field}: " + ", ".join(f"{k} {v}" for k, v in quality.distribution.items())]
    if quality.scores is not None:
        lines.append(
            f"against gold column {quality.gold_column!r}: {quality.gold_rows} rows with a gold "
            f"label, {quality.unanswered} of them without an answer"
        )
        lines.append(_scores(quality.scores, "gold", "answer"))
    return "\n".join(lines)


def _comparison(comparison: Comparison) -> str:
    lines = [
        f"{comparison.field} against {comparison.other}: {comparison.differing} of "
        f"{comparison.scores.rows} rows differ",
        _scores(comparison.scores, "this run", "other"),
    ]
    for example in comparison.examples[:5]:
        lines.append(f"  {example['id']}: {example['this']} / {example['other']}")
    if comparison.differing:
        lines.append("  (zbatch review ... --against lists all of them)")
    return "\n".join(lines)


def _scores(scores: Scores, truth: str, predicted: str) -> str:
    if not scores.rows:
        return "  no rows to compare"
    kappa = "undefined" if scores.kappa is None else f"{scores.kappa:.3f}"
    lines = [
        f"  accuracy {scores.accuracy:.1%} ({scores.agreed} of {scores.rows}), "
        f"Cohen's kappa {kappa}, macro F1 {scores.macro_f1:.3f}"
    ]
    width = max(len(label) for label in scores.labels)
    lines.append(f"  {'':<{width}}  precision  recall     F1  support")
    for score in scores.per_class:
        lines.append(
            f"  {score.label:<{width}}  {score.precision:>9.3f}  {score.recall:>6.3f}  "
            f"{score.f1:>5.3f}  {score.support:>7}"
        )
    cell = max(5, width, *(len(str(n)) for line in scores.confusion for n in line))
    lines.append(f"  confusion ({truth} down, {predicted} across):")
    lines.append("  " + " " * width + "".join(f" {label:>{cell}}" for label in scores.labels))
    for label, line in zip(scores.labels, scores.confusion, strict=True):
        lines.append(f"  {label:<{width}}" + "".join(f" {n:>{cell}}" for n in line))
    return "\n".join(lines)
