"""The report as one self-contained HTML page: tables, and charts drawn by plotly.js.

The page holds plotly.js itself (read from the ``plotly`` package's own copy; the Python side
of plotly is never imported) and the report's figures as JSON, so it opens from a file with no
network: a confusion-matrix heatmap per label column scored against gold (and against another
run), the label distribution, answers and spend over time, and a latency histogram. Why plotly
and not Vega-Lite (vl-convert) or hand-drawn SVG: docs/performance.md "The report page".

Every run writes OUTDIR/report.html at its end when ``zbatch[report]`` is installed
(:func:`write_run_report`); that never fails the run.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import JobError
from ..store import OutputDir, open_storage
from . import pagestamp

if TYPE_CHECKING:  # a run's end imports the figures only to write a page
    from .labels import Scores
    from .quality import Report

REPORT_FILE = "report.html"
MISSING = 'the HTML report needs plotly: pip install "zbatch[report]"'


@functools.cache
def plotly_js_path() -> Path | None:
    """plotly.js as the plotly package ships it, or None when plotly is not installed."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def write_html(report: Report, target: str) -> None:
    """Write the page to ``target`` (a path or an s3:// / gs:// URL); JobError when plotly is
    not installed or the name does not end in .html."""
    if not target.lower().endswith((".html", ".htm")):
        raise JobError(f"cannot write the report to {target}: name an .html file")
    script = plotly_js_path()
    if script is None:
        raise JobError(MISSING)
    folder, _, name = target.rstrip("/").rpartition("/")
    page = _writer(report, script)
    open_storage(folder if "/" in target else ".").write_file(name, page, outdir=False)


def write_run_report(outdir: OutputDir, log: logging.Logger, *, input_rows: int) -> None:
    """OUTDIR/report.html at the end of a run, when plotly is installed; a failure is a
    warning in run.log, never the run's.

    A page whose stamp says it was built from what the OUTDIR holds now (the run committed
    nothing, and ``input_rows``, the spend and job.json are as they were) is kept, and
    run.log says so (:mod:`.pagestamp`)."""
    script = plotly_js_path()
    if script is None:
        return
    try:
        digest = pagestamp.stamp(outdir, input_rows, script)
        if digest is not None:
            written = pagestamp.written_at(outdir.storage.read_bytes(REPORT_FILE), digest)
            if written is not None:
                log.info(
                    "report.html kept: its figures, as of %s, are what the OUTDIR holds", written
                )
                return
        from .quality import build_report

        page = _writer(build_report(outdir), script, digest)
        outdir.storage.write_file(REPORT_FILE, page)
    except Exception as exc:  # the run's outcome stands whatever the report meets
        log.warning("report.html not written: %s", " ".join(str(exc).split())[:300])


# Where the page takes plotly.js (JSON and escaped HTML never hold a NUL).
_SCRIPT = "\0plotly.js\0"


def _writer(report: Report, script: Path, digest: str | None = None) -> Callable[[BinaryIO], None]:
    """Writes the page, plotly.js copied from its file a block at a time: read whole, it was
    three 4.8 MB copies (text, page, UTF-8 bytes) at the end of a run (docs/performance.md
    "Memory at 200,000 rows"). ``digest``: the run's stamp, for the page to carry."""
    head, _, tail = render(report, _SCRIPT, digest).partition(_SCRIPT)

    def write(handle: BinaryIO) -> None:
        handle.write(head.encode("utf-8"))
        with script.open("rb") as source:
            shutil.copyfileobj(source, handle)
        handle.write(tail.encode("utf-8"))

    return write


def render(report: Report, plotly_js: str, digest: str | None = None) -> str:
    """The page's HTML, with ``plotly_js`` inlined; with ``digest`` (a run's page), the stamp
    of what it was built from and when, which its overview shows."""
    figures = report.to_dict()
    data = json.dumps(figures, sort_keys=True, default=str).replace("</", "<\\/")
    status = report.status
    title = f"zbatch report: {status.outdir}"
    written = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    stamp = "" if digest is None else pagestamp.marker(digest, written)
    sections = [_overview(report, None if digest is None else written)]
    for index, quality in enumerate(report.labels):
        sections.append(f"<h2>{_e(quality.field)}</h2>")
        sections.append(f'<div class="chart" id="distribution-{index}"></div>')
        if quality.scores is not None:
            sections.append(
                f"<h3>against gold column {_e(quality.gold_column or '')}</h3>"
                f"<p>{quality.gold_rows} rows with a gold label, {quality.unanswered} of them "
                "without an answer.</p>"
            )
            sections.append(_scores_table(quality.scores))
            sections.append(f'<div class="chart" id="confusion-{index}"></div>')
    for index, comparison in enumerate(report.against):
        sections.append(
            f"<h2>{_e(comparison.field)} against {_e(comparison.other)}</h2>"
            f"<p>{comparison.differing} of {comparison.scores.rows} rows differ.</p>"
        )
        sections.append(_scores_table(comparison.scores))
        sections.append(f'<div class="chart" id="against-{index}"></div>')
    sections.append("<h2>Answers and spend over time</h2>")
    sections.append('<div class="chart" id="throughput"></div>')
    sections.append("<h2>Latency</h2>")
    sections.append('<div class="chart" id="latency"></div>')
    simulated = (
        '<p class="simulated">Simulated answers (--simulate), not a model\'s.</p>'
        if status.simulated
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{stamp}<title>{_e(title)}</title>\n'
        f"<style>{STYLE}</style>\n"
        f"<script>{plotly_js}</script>\n"
        f'<script type="application/json" id="zbatch-report">{data}</script>\n'
        f"</head><body><h1>{_e(title)}</h1>{simulated}\n"
        + "\n".join(sections)
        + f"\n<script>{CHARTS}</script>\n</body></html>\n"
    )


def _e(text: object) -> str:
    return html.escape(str(text))


def _overview(report: Report, written: str | None) -> str:
    from .quality import figure_rows  # loaded already: a report was built

    status = report.status
    cost = "unknown" if status.cost_usd is None else f"${status.cost_usd:.4f}"
    rows: list[tuple[str, object]] = [
        ("done", status.done),
        ("failed", status.failed),
        ("pending", "unknown" if status.pending is None else status.pending),
        ("tokens in / out", f"{status.tokens.prompt} / {status.tokens.completion}"),
        ("spent", cost),
    ]
    if status.errors:
        rows.append(("errors", ", ".join(f"{k} {v}" for k, v in sorted(status.errors.items()))))
    rows.extend(figure_rows(report))
    if written is not None:
        rows.append(("figures as of", f"{written}: a later run that commits nothing keeps them"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="overview">{body}</table>'


def _scores_table(scores: Scores) -> str:
    if not scores.rows:
        return "<p>No rows to compare.</p>"
    kappa = "undefined" if scores.kappa is None else f"{scores.kappa:.3f}"
    head = (
        f"<p>accuracy {scores.accuracy:.1%} ({scores.agreed} of {scores.rows}), "
        f"Cohen's kappa {kappa}, macro F1 {scores.macro_f1:.3f}</p>"
    )
    rows = "".join(
        f"<tr><th>{_e(c.label)}</th><td>{c.precision:.3f}</td><td>{c.recall:.3f}</td>"
        f"<td>{c.f1:.3f}</td><td>{c.support}</td></tr>"
        for c in scores.per_class
    )
    return (
        head + '<table class="scores"><tr><th>label</th><th>precision</th><th>recall</th>'
        f"<th>F1</th><th>support</th></tr>{rows}</table>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
td { font-variant-numeric: tabular-nums; }
.chart { width: 100%; height: 380px; }
.simulated { background: #fff3cd; padding: 0.5em; }
"""

# Draws each chart from the embedded figures; window.zbatchReady says every chart is drawn
# (the browser test waits for it), window.zbatchErrors collects what went wrong.
CHARTS = """
(function () {
  const report = JSON.parse(document.getElementById("zbatch-report").textContent);
  const config = {displaylogo: false, responsive: true};
  const plots = [];
  function plot(id, traces, layout) {
    const element = document.getElementById(id);
    if (!element) { return; }
    plots.push(Plotly.newPlot(element, traces, Object.assign({margin: {t: 30}}, layout), config));
  }
  function heatmap(id, scores, truth, predicted) {
    plot(id, [{type: "heatmap", z: scores.confusion, x: scores.labels, y: scores.labels,
               colorscale: "Blues", reversescale: true, texttemplate: "%{z}", hovertemplate:
               truth + " %{y}, " + predicted + " %{x}: %{z} rows<extra></extra>"}],
         {xaxis: {title: {text: predicted}, type: "category"},
          yaxis: {title: {text: truth}, type: "category", autorange: "reversed"}});
  }
  report.labels.forEach(function (quality, index) {
    const names = Object.keys(quality.distribution);
    plot("distribution-" + index,
         [{type: "bar", x: names, y: names.map(function (n) { return quality.distribution[n]; })}],
         {title: {text: quality.field + ": label distribution"},
          xaxis: {type: "category"}, yaxis: {title: {text: "rows"}}});
    if (quality.scores) {
      heatmap("confusion-" + index, quality.scores, "gold", "answer");
    }
  });
  report.against.forEach(function (comparison, index) {
    heatmap("against-" + index, comparison.scores, "this run", "other run");
  });
  const times = report.throughput.map(function (b) { return b.start; });
  let spent = 0;
  const cumulative = report.throughput.map(function (b) {
    spent += b.cost_usd || 0; return spent;
  });
  plot("throughput", [
    {type: "bar", name: "answers per " + report.bucket_seconds + " s", x: times,
     y: report.throughput.map(function (b) { return b.rows; }),
     width: report.bucket_seconds * 900, offset: 0},
    {type: "scatter", mode: "lines+markers", name: "spend so far (USD)", x: times,
     y: cumulative, yaxis: "y2"}
  ], {yaxis: {title: {text: "answers"}, rangemode: "tozero"},
      yaxis2: {title: {text: "USD"}, overlaying: "y", side: "right", rangemode: "tozero"},
      legend: {orientation: "h"}});
  const edges = report.latency.edges;
  plot("latency", [{type: "bar", name: "answers",
    x: report.latency.counts.map(function (c, i) { return (edges[i] + edges[i + 1]) / 2; }),
    y: report.latency.counts,
    width: edges.length > 1 ? edges[1] - edges[0] : 1}],
    {xaxis: {title: {text: "latency (ms)"}}, yaxis: {title: {text: "answers"}}, bargap: 0.05});
  Promise.all(plots).then(function () { window.zbatchReady = true; },
                          function (error) { window.zbatchErrors = String(error); });
})();
"""
