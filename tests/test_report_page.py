"""The HTML report in a real browser: Chromium from the system's packages, driven by
Playwright for Python (its own browser download is never used). The page must draw every
chart from the figures `zbatch report --json` prints, with no console error and no request
for anything (it is one self-contained file)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_zbatch, zbatch_env

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}")


@pytest.fixture(scope="module")
def page_and_figures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Two simulated runs of the labelled tickets (two prompts), reported against the gold
    column and each other: the page and the --json figures of the same report."""
    folder = tmp_path_factory.mktemp("page")
    for name in ("jobs", "sample_data"):
        shutil.copytree(ROOT / name, folder / name)
    env = zbatch_env()
    for job in ("triage", "triage_v2"):
        proc = run_zbatch("run", f"jobs/{job}.toml", "--simulate", "-q", env=env, cwd=folder)
        assert proc.returncode == 0, proc.stderr
    args = ["out/triage_v2.simulated", "--gold", "category", "--against", "out/triage.simulated"]
    proc = run_zbatch("report", *args, "--json", "-o", "page.html", env=env, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "page.html", json.loads(proc.stdout)


def open_page(path: Path) -> tuple[Any, list[str], list[str]]:
    """The page loaded in Chromium with every chart drawn; (page, console errors, requests
    for anything but the file itself)."""
    from playwright.sync_api import sync_playwright  # the test extra installs it

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = path.as_uri()
    page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
    page.goto(url)
    page.wait_for_function("window.zbatchReady === true || window.zbatchErrors", timeout=60_000)
    page._zbatch_close = lambda: (browser.close(), playwright.stop())  # type: ignore[attr-defined]
    return page, errors, requests


def test_the_page_draws_every_chart_from_the_report_figures(page_and_figures) -> None:
    """Confusion heatmaps (against gold and against the other run), the label distribution,
    answers and spend over time and the latency histogram hold exactly the --json figures and
    are drawn as SVG marks; no console error, no network request, the page is one file."""
    path, figures = page_and_figures
    html = path.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html  # nothing loaded from elsewhere
    page, errors, requests = open_page(path)
    try:
        assert page.evaluate("window.zbatchErrors || null") is None
        data = page.evaluate(
            """() => Object.fromEntries(Array.from(document.querySelectorAll('.chart'))
                 .map(e => [e.id, e.data.map(t => ({x: t.x, y: t.y, z: t.z || null}))]))"""
        )
        (label,) = figures["labels"]
        scores = label["scores"]
        (confusion,) = data["confusion-0"]
        assert confusion["z"] == scores["confusion"]
        assert confusion["x"] == confusion["y"] == scores["labels"]
        (against,) = data["against-0"]
        assert against["z"] == figures["against"][0]["scores"]["confusion"]
        (distribution,) = data["distribution-0"]
        assert dict(zip(distribution["x"], distribution["y"], strict=True)) == label["distribution"]
        rows, spend = data["throughput"]
        buckets = figures["throughput"]
        assert rows["y"] == [b["rows"] for b in buckets]
        assert rows["x"] == [b["start"] for b in buckets]
        total = 0.0
        for drawn, bucket in zip(spend["y"], buckets, strict=True):
            total += bucket["cost_usd"]
            assert drawn == pytest.approx(total)
        (latency,) = data["latency"]
        assert latency["y"] == figures["latency"]["counts"]
        edges = figures["latency"]["edges"]
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        assert latency["x"] == pytest.approx(centres)
        # Drawn, not only handed over: one SVG bar per label, per bucket, per histogram bin,
        # and a heatmap image with one text mark per cell.
        marks = page.evaluate(
            """() => ({
                distribution: document.querySelectorAll('#distribution-0 .bars .point').length,
                throughput: document.querySelectorAll('#throughput .bars .point').length,
                latency: document.querySelectorAll('#latency .bars .point').length,
                heatmap: document.querySelectorAll('#confusion-0 .hm image').length,
                cells: Array.from(document.querySelectorAll('#confusion-0 text'))
                    .map(t => t.textContent),
            })"""
        )
        assert marks["distribution"] == len(label["distribution"])
        assert marks["throughput"] == len(buckets)
        assert marks["latency"] == len(figures["latency"]["counts"])
        assert marks["heatmap"] == 1
        for line in scores["confusion"]:
            for count in line:
                assert str(count) in marks["cells"]
        assert errors == []
        assert requests == []
    finally:
        page._zbatch_close()


def test_a_run_writes_its_page_and_no_report_turns_it_off(tmp_path: Path) -> None:
    """Every run leaves OUTDIR/report.html, which opens in Chromium with its charts and
    says the answers are simulated; --no-report leaves none."""
    for name in ("jobs", "sample_data"):
        shutil.copytree(ROOT / name, tmp_path / name)
    env = zbatch_env()
    proc = run_zbatch("run", "jobs/triage.toml", "--simulate", "-q", "--limit", "20", env=env,
                      cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "out/triage.simulated/report.html"
    page, errors, requests = open_page(path)
    try:
        assert "Simulated answers" in page.inner_text(".simulated")
        bars = page.evaluate("document.querySelectorAll('#distribution-0 .bars .point').length")
        assert bars >= 2
        assert (errors, requests) == ([], [])
    finally:
        page._zbatch_close()
    args = ["run", "jobs/triage_v2.toml", "--simulate", "-q", "--limit", "5", "--no-report"]
    proc = run_zbatch(*args, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out/triage_v2.simulated/report.html").exists()


def test_a_run_whose_every_row_failed_gets_a_page_without_errors(tmp_path: Path) -> None:
    """No result part at all (every row a non-retryable error): the report counts the gold
    rows as unanswered, and the run's page draws its empty charts with no console error."""
    import httpx

    import zbatch

    rows = [{"id": f"a{i}", "prompt": f"p{i}", "g": "yes"} for i in range(3)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    job = zbatch.Job(
        input_path=str(source), output_dir=str(tmp_path / "out"), choices=("yes", "no")
    )
    refuse = httpx.MockTransport(
        lambda request: httpx.Response(400, json={"error": {"code": "1210", "message": "no"}})
    )
    assert zbatch.run(job, transport=refuse).exit_code == 1
    report = zbatch.report(job.output_dir, gold="g")
    (label,) = report.labels
    assert (label.gold_rows, label.unanswered, label.distribution) == (3, 3, {})
    assert report.status.errors == {"bad_request": 3}
    page, errors, requests = open_page(tmp_path / "out" / "report.html")
    try:
        assert (errors, requests) == ([], [])
    finally:
        page._zbatch_close()
