"""Start-up stays cheap (issue 13 item 5): what the quick commands import, and what status reads.

How fast they are is measured by bench/startup.py, not asserted here (the machine is shared).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import prompt_rows, run_against, run_args, run_zbatch, write_jsonl, zbatch_env
from helpers import assert_answers
from zai_server import ZaiServer

from zbatch.store import OutputDir

HEAVY = ("pyarrow", "aiohttp", "httpx", "anyio", "tqdm")

# Prints, at exit (click ends the process with SystemExit), which of MODULES were imported,
# and Arrow's allocator when Arrow was.
REPORT_AT_EXIT = """
import atexit, json, sys
def report():
    pool = sys.modules["pyarrow"].default_memory_pool() if "pyarrow" in sys.modules else None
    loaded = sorted(m for m in MODULES if m in sys.modules)
    print(json.dumps({"heavy": loaded, "pool": pool and pool.backend_name}))
atexit.register(report)
"""


def heavy_imports(
    code: str, modules: tuple[str, ...] = HEAVY, env: dict[str, str] | None = None
) -> tuple[list[str], str, str | None]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``; its
    stdout; Arrow's default allocator if Arrow was imported."""
    proc = subprocess.run(
        [sys.executable, "-c", f"MODULES = {modules!r}" + REPORT_AT_EXIT + code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.splitlines()
    report = json.loads(last)
    return report["heavy"], "\n".join(printed), report["pool"]


def test_importing_the_cli_imports_no_heavy_module() -> None:
    """`import zbatch.cli` imports none of pyarrow, aiohttp, httpx, anyio or tqdm."""
    assert heavy_imports("import zbatch.cli") == ([], "", None)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["status", "-h"]])
def test_quick_commands_import_no_heavy_module(args: list[str]) -> None:
    """`zbatch --version` and the help pages (the console script's entry point) import none of
    the heavy modules, which were most of their start-up CPU."""
    code = f"sys.argv = ['zbatch', *{args!r}]\nfrom zbatch.cli import main\nmain()\n"
    imported, printed, _ = heavy_imports(code)
    assert imported == []
    assert printed.startswith("zbatch, version " if args == ["--version"] else "Usage: zbatch")


def test_status_counts_agree_with_what_a_run_resumes_from(
    server: ZaiServer, tmp_path: Path
) -> None:
    """Status counts ids with a result without holding them as Python strings; its figures
    equal the resume state's, including ids that failed first and succeeded later."""
    rows = [
        {"id": f"r{i:02d}", "prompt": f"question {i}" + (" FAIL=400" if i % 5 == 0 else "")}
        for i in range(40)
    ]
    source = str(write_jsonl(tmp_path / "in.jsonl", rows))
    outdir = tmp_path / "out"
    args = ("-i", source, "-o", str(outdir), "--max-retries", "0", "--quiet")
    server.configure(rates={"500": 1.0})  # every row without a FAIL directive: retryable 500
    run_against(server, *args, expect=1)
    server.configure(rates={})
    run_against(server, *args, "--limit", "10")  # 10 of those 32 now succeed

    proc = run_zbatch("status", str(outdir), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    state = OutputDir(str(outdir)).load_state()
    assert (report["done"], report["failed"], report["failed_retryable"]) == (10, 30, 22)
    assert (report["done"], report["failed"], report["failed_retryable"]) == (
        len(state.succeeded),
        state.failed,
        state.failed_retryable,
    )
    assert report["errors"] == dict(Counter(kind for kind, _ in state.open_errors().values()))


def test_status_imports_no_http_stack(server: ZaiServer, tmp_path: Path) -> None:
    """`zbatch status` (run often from cron) imports pyarrow to read the parts, but not the
    HTTP stack, anyio or tqdm, which only a run uses; Arrow reads with the system allocator
    the CLI picks (it returns freed pages: docs/performance.md)."""
    source = str(write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hello"}]))
    run_against(server, "-i", source, "-o", str(tmp_path / "out"), "--quiet")
    argv = ["zbatch", "status", str(tmp_path / "out")]
    code = f"sys.argv = {argv!r}\nfrom zbatch.cli import main\nmain()\n"
    imported, printed, pool = heavy_imports(code)
    assert (imported, pool) == (["pyarrow"], "system")
    assert re.search(r"^done\s+1$", printed, flags=re.MULTILINE), printed


# Arrow modules a run needs only for its report (docs/performance.md, "Issue 25, third
# session": ~15 MB of a run's peak between them).
REPORT_ONLY = ("pyarrow.compute", "pyarrow.dataset")


def test_a_run_reads_sends_and_commits_without_arrow_compute_or_dataset(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A run with --no-report, first or resumed, never imports pyarrow.compute or
    pyarrow.dataset: reading JSONL, skipping done blocks, converting rows to columns,
    committing parts and reading the done ids back all go without them. Nor does a run that
    keeps its report.html (nothing it shows changed): the figures are not read."""
    rows = prompt_rows(30)
    source = str(write_jsonl(tmp_path / "in.jsonl", rows))
    outdir = tmp_path / "out"
    for limit in ("20", "30"):  # a first run of 20 rows, then a resume that skips them
        args = run_args(source, outdir, server, "--no-report", "--quiet", "--limit", limit)
        code = f"sys.argv = {['zbatch', *args]!r}\nfrom zbatch.cli import main\nmain()\n"
        imported, _, _ = heavy_imports(code, REPORT_ONLY, zbatch_env())
        assert imported == []
    assert_answers(outdir, {row["id"]: row["prompt"] for row in rows})
    args = run_args(source, outdir, server, "--quiet")
    assert run_zbatch(*args).returncode == 0  # writes report.html
    page = (outdir / "report.html").read_bytes()
    code = f"sys.argv = {['zbatch', *args]!r}\nfrom zbatch.cli import main\nmain()\n"
    imported, _, _ = heavy_imports(code, REPORT_ONLY, zbatch_env())
    assert (imported, (outdir / "report.html").read_bytes()) == ([], page)


def test_a_run_writes_its_report_page_without_arrow_compute(
    server: ZaiServer, tmp_path: Path
) -> None:
    """The report page a run writes at its end, for results without label columns (most
    runs), is built without pyarrow.compute (~7 MB of a run's peak: docs/performance.md,
    "Issue 25, fifth session"); its figures are those of the committed parts."""
    pytest.importorskip("plotly")  # the run's page needs zbatch[report]
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = prompt_rows(40)
    source = str(write_jsonl(tmp_path / "in.jsonl", rows))
    outdir = tmp_path / "out"
    args = run_args(source, outdir, server, "--quiet", "--limit", "34")
    code = f"sys.argv = {['zbatch', *args]!r}\nfrom zbatch.cli import main\nmain()\n"
    imported, _, _ = heavy_imports(code, REPORT_ONLY, zbatch_env())
    assert imported == []

    found = re.search(
        r'<script type="application/json" id="zbatch-report">(.*?)</script>',
        (outdir / "report.html").read_text(encoding="utf-8"),
        re.S,
    )
    assert found is not None
    figures = json.loads(found.group(1))
    results = pq.read_table(outdir / "results")
    paid = pc.greater(results["attempts"], 0)
    status = figures["status"]
    assert (status["done"], status["failed"], status["pending"]) == (34, 0, 6)
    assert status["tokens"] == {
        "prompt": pc.sum(pc.filter(results["prompt_tokens"], paid)).as_py(),
        "completion": pc.sum(pc.filter(results["completion_tokens"], paid)).as_py(),
        "cached": pc.sum(pc.filter(results["cached_tokens"], paid)).as_py(),
    }
    assert status["tokens"]["prompt"] > 0
    latencies = pc.drop_null(results["latency_ms"]).to_pylist()
    assert figures["latency"]["rows"] == len(latencies) == 34
    assert figures["latency"]["max"] == max(latencies)
    assert sum(bucket["rows"] for bucket in figures["throughput"]) == 34
