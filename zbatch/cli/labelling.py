"""The labelling loop's commands: `zbatch report` and `zbatch review` (registered on the
group in :mod:`zbatch.cli`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .commands import _outdir, _reports_errors

F = TypeVar("F", bound=Callable[..., Any])


def _compared(gold: str, against: str) -> Callable[[F], F]:
    """--gold COLUMN and --against OUTDIR2 of `report` and `review`, with their help texts."""

    def add(func: F) -> F:
        func = click.option("--against", metavar="OUTDIR2", callback=_outdir, help=against)(func)
        return click.option("--gold", metavar="COLUMN", help=gold)(func)

    return add


@click.command()
@click.argument("outdir", callback=_outdir)
@_compared(
    gold="Input column of reference labels (joined by id) to score the labels against; "
    "default: the job's labels.gold_column.",
    against="Another OUTDIR of the same rows (another prompt or model): agreement, kappa and "
    "the rows where the labels differ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--output",
    "-o",
    "html",
    type=click.Path(dir_okay=False),
    help="Also write the report as one self-contained HTML page with charts (zbatch[report]).",
)
@_reports_errors
def report(
    outdir: str, gold: str | None, against: str | None, as_json: bool, html: str | None
) -> None:
    """Quality report: counts, spend, latency, throughput; label distribution, accuracy,
    Cohen's kappa, per-class precision/recall/F1 and confusion matrix against a gold column."""
    from .. import api
    from .reporttext import format_report

    figures = api.report(outdir, gold=gold, against=against, html=html)
    if as_json:
        click.echo(json.dumps(figures.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(format_report(figures))
    if html is not None:
        click.echo(f"wrote {html}", err=True)


@click.command()
@click.argument("outdir", callback=_outdir)
@_compared(
    gold="Input column of reference labels: rows whose label differs are picked; default: "
    "the job's labels.gold_column.",
    against="Another OUTDIR of the same rows: rows it labelled differently are picked.",
)
@click.option(
    "-n",
    "limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="How many rows to pick (the most worth a look first).",
)
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="File to write: .csv or .jsonl (or Label Studio JSON with --format label-studio).",
)
@click.option(
    "--format",
    "kind",
    type=click.Choice(["csv", "jsonl", "label-studio"]),
    help="Output format (default: from the file name); label-studio: Label Studio's import "
    "JSON with the model's label as a prediction.",
)
@_reports_errors
def review(
    outdir: str, gold: str | None, against: str | None, limit: int, output: str, kind: str | None
) -> None:
    """Pick the rows most worth a human look (wrong against gold, different from another run,
    split samples, invalid answers), with why and the input's columns."""
    from .. import api

    done = api.review(outdir, output, gold=gold, against=against, limit=limit, format=kind)
    found = ", ".join(f"{kind} {count}" for kind, count in sorted(done.reasons.items()))
    click.echo(
        f"wrote {done.rows} of {done.candidates} rows worth a look to {output}"
        + (f" ({found})" if found else "")
    )
