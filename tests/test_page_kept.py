"""A run that commits nothing keeps the report.html an earlier run wrote, only while the page
still shows what the OUTDIR holds (zbatch.results.pagestamp): what the page says must be what
`zbatch report` says of the OUTDIR, whichever run wrote it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

import zbatch
from zbatch.job.settings import DEFAULT_MODEL

pytest.importorskip("plotly")  # the run's page needs zbatch[report]

FIGURES = re.compile(r'<script type="application/json" id="zbatch-report">(.*?)</script>', re.S)


def write_rows(path: Path, start: int, stop: int) -> None:
    with path.open("a") as handle:
        for n in range(start, stop):
            handle.write(json.dumps({"id": f"r{n}", "prompt": f"p{n}", "gold": "yes"}) + "\n")


def simulated_job(source: Path, outdir: Path, **settings: Any) -> zbatch.Job:
    """A job answered in-process by --simulate, every row answered (no faults, no latency),
    into ``outdir`` (a rehearsal's OUTDIR: its name ends in .simulated)."""
    return zbatch.Job(
        input_path=str(source),
        output_dir=str(outdir.with_name(outdir.name.removesuffix(".simulated"))),
        simulate=True,
        simulate_latency=0.0,
        simulate_rate_limited=0.0,
        simulate_server_error=0.0,
        choices=("yes", "no"),
        **settings,
    )


def page_figures(outdir: Path) -> dict[str, Any]:
    """What the page shows: its overview's figures, labels, throughput and latency."""
    found = FIGURES.search((outdir / "report.html").read_text(encoding="utf-8"))
    assert found is not None
    return shown(json.loads(found.group(1)))


def shown(figures: dict[str, Any]) -> dict[str, Any]:
    status = figures["status"]
    overview = ("done", "failed", "pending", "tokens", "cost_usd", "errors", "labels")
    return {
        "status": {name: status[name] for name in overview},
        **{name: figures[name] for name in ("latency", "throughput", "cache", "labels")},
    }


def reported(outdir: Path) -> dict[str, Any]:
    """What `zbatch report` says of the OUTDIR now, as the page holds it (JSON)."""
    return shown(json.loads(json.dumps(zbatch.report(outdir).to_dict(), default=str)))


def kept_lines(outdir: Path) -> int:
    return (outdir / "run.log").read_text().count("report.html kept")


def test_a_run_that_commits_nothing_keeps_the_page_which_still_holds_the_figures(
    tmp_path: Path,
) -> None:
    source, outdir = tmp_path / "in.jsonl", tmp_path / "out.simulated"
    write_rows(source, 0, 40)
    job = simulated_job(source, outdir)
    assert zbatch.run(job, limit=25).exit_code == 0
    first = (outdir / "report.html").read_bytes()
    assert page_figures(outdir)["status"]["done"] == 25
    assert zbatch.run(job).exit_code == 0  # the other 15: a new page
    page = (outdir / "report.html").read_bytes()
    assert page != first and kept_lines(outdir) == 0
    assert page_figures(outdir)["status"]["done"] == 40
    again = zbatch.run(job)  # nothing to send: the page is kept, and says since when
    assert again.exit_code == 0 and again.stats.skipped == 40
    assert (outdir / "report.html").read_bytes() == page
    assert kept_lines(outdir) == 1
    assert page_figures(outdir) == reported(outdir)
    assert b"figures as of</th><td>" in page and b"a later run that commits nothing" in page


def test_a_page_that_misses_what_was_committed_since_is_written_anew(tmp_path: Path) -> None:
    """The page of a first run, then rows committed by a run with --no-report: the run after
    that commits nothing, and still writes the page again, with every row in it. The answers
    are free, so the spend says nothing: the committed parts do."""
    source, outdir = tmp_path / "in.jsonl", tmp_path / "out.simulated"
    write_rows(source, 0, 30)
    free = {DEFAULT_MODEL: {"input": 0.0, "cached": 0.0, "output": 0.0}}
    job = simulated_job(source, outdir, prices=free)
    assert zbatch.run(job, limit=10).exit_code == 0
    assert page_figures(outdir)["status"]["done"] == 10
    assert zbatch.run(dataclasses.replace(job, report=False)).exit_code == 0
    assert page_figures(outdir)["status"]["done"] == 10  # left as it was
    assert zbatch.run(job).stats.skipped == 30
    assert kept_lines(outdir) == 0
    assert page_figures(outdir) == reported(outdir)
    assert page_figures(outdir)["status"]["done"] == 30
    assert page_figures(outdir)["status"]["cost_usd"] == 0


def test_rows_added_to_the_input_and_not_sent_give_a_new_page(tmp_path: Path) -> None:
    """Rows appended to the input change what is pending even when the run sends none of them
    (limit 0 of them): the page is written anew."""
    source, outdir = tmp_path / "in.jsonl", tmp_path / "out.simulated"
    write_rows(source, 0, 20)
    job = simulated_job(source, outdir)
    assert zbatch.run(job).exit_code == 0
    assert page_figures(outdir)["status"]["pending"] == 0
    write_rows(source, 20, 26)
    assert zbatch.run(job, limit=0).stats.ok == 0
    assert kept_lines(outdir) == 0
    assert page_figures(outdir)["status"]["pending"] == 6
    assert page_figures(outdir) == reported(outdir)


def test_a_page_scored_against_a_gold_column_is_always_written_anew(tmp_path: Path) -> None:
    """The gold labels are the input's, which the stamp does not cover."""
    source, outdir = tmp_path / "in.jsonl", tmp_path / "out.simulated"
    write_rows(source, 0, 12)
    job = simulated_job(source, outdir, gold_column="gold")
    for _ in range(2):
        assert zbatch.run(job).exit_code == 0
    assert kept_lines(outdir) == 0
    assert b'name="zbatch-figures"' not in (outdir / "report.html").read_bytes()
