"""The Python API used the way users will: from a script, a notebook cell, an async worker.

Runs go in-process against the loopback Z.AI server; every result row must hold the answer
to its own prompt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import prompt_rows, write_jsonl
from zai_server import ZaiServer, answer_for

import zbatch
from zbatch import Job, JobError
from zbatch.progress import NullProgress

KEY = "zk-api-test-secret-0123456789"


def make_job(tmp_path: Path, server: ZaiServer, rows: int = 20, **settings: Any) -> Job:
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(rows))
    return Job(
        input_path=str(source),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        concurrency=4,
        backoff_base=0.02,
        backoff_cap=0.1,
        **settings,
    )


def assert_each_row_answers_its_prompt(job: Job, count: int) -> None:
    table = zbatch.read_results(job.output_dir)
    prompts = {row["id"]: row["prompt"] for row in prompt_rows(count)}
    rows = table.to_pylist()
    assert sorted(row["id"] for row in rows) == sorted(prompts)
    for row in rows:
        assert row["status"] == "ok"
        expected = answer_for([{"role": "user", "content": prompts[row["id"]]}])
        assert row["content"] == expected


def test_run_from_a_script_answers_every_row_with_its_own_answer(tmp_path, server, monkeypatch):
    monkeypatch.delenv("ZAI_API_KEY", raising=False)
    server.configure(require_key=KEY)  # any other key is answered 401
    job = make_job(tmp_path, server)
    result = zbatch.run(job, api_key=KEY)
    assert (result.exit_code, result.stopped, result.stats.ok) == (0, None, 20)
    assert_each_row_answers_its_prompt(job, 20)


def test_an_api_key_passed_in_is_used_and_never_stored(tmp_path, server):
    job = make_job(tmp_path, server, rows=5)
    zbatch.run(job, api_key=KEY)
    for path in Path(job.output_dir).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_arun_inside_asyncio_run_like_a_notebook_cell(tmp_path, server):
    job = make_job(tmp_path, server)

    async def cell() -> zbatch.RunResult:
        return await zbatch.arun(job, api_key=KEY)

    result = asyncio.run(cell())
    assert result.exit_code == 0
    assert_each_row_answers_its_prompt(job, 20)


def test_arun_inside_an_anyio_task_group_beside_other_tasks(tmp_path, server):
    job = make_job(tmp_path, server)
    outcome: dict[str, Any] = {}
    ticks = []

    async def other_work() -> None:
        while "result" not in outcome:
            ticks.append(1)
            await anyio.sleep(0.001)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(other_work)
            outcome["result"] = await zbatch.arun(job, api_key=KEY)

    anyio.run(main)
    assert outcome["result"].exit_code == 0
    assert ticks, "the event loop was shared: the other task ran during the run"
    assert_each_row_answers_its_prompt(job, 20)


def test_run_works_from_a_thread_whose_event_loop_is_already_running(tmp_path, server):
    """A Jupyter cell calling the sync API: the loop is running, so run() gets its own."""
    job = make_job(tmp_path, server)

    async def cell() -> zbatch.RunResult:
        return zbatch.run(job, api_key=KEY)

    assert asyncio.run(cell()).exit_code == 0
    assert_each_row_answers_its_prompt(job, 20)


def test_run_log_gets_the_runs_events_whatever_the_logging_setup(tmp_path, server, monkeypatch):
    job = make_job(tmp_path, server, rows=5)
    # As in a fresh interpreter: nobody has set the zbatch logger's level (a CLI test in the
    # same session may have; the CLI sets it, a library must not).
    monkeypatch.setattr(logging.getLogger("zbatch"), "level", logging.NOTSET)
    root = logging.getLogger()
    assert logging.getLogger("zbatch").getEffectiveLevel() > logging.INFO  # nobody set it
    handlers_before = list(root.handlers)
    zbatch.run(job, api_key=KEY)
    log = (Path(job.output_dir) / "run.log").read_text(encoding="utf-8")
    assert " INFO start: " in log
    assert " INFO end: finished, ok 5" in log
    assert root.handlers == handlers_before
    assert logging.getLogger("zbatch").level == logging.NOTSET  # the caller's setup untouched


def test_two_runs_in_one_interpreter_pile_up_no_handlers(tmp_path, server, caplog):
    job = make_job(tmp_path, server, rows=5)
    public = logging.getLogger("zbatch")
    before = list(public.handlers)
    with caplog.at_level(logging.INFO, logger="zbatch"):
        zbatch.run(job, api_key=KEY)
        zbatch.run(job, api_key=KEY)
    assert public.handlers == before
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("end:")]
    assert len(ends) == 2  # one per run: each record reached the caller once
    log = (Path(job.output_dir) / "run.log").read_text(encoding="utf-8")
    assert log.count(" INFO end: ") == 2


def test_the_library_installs_no_signal_handler(tmp_path, server):
    """SIGTERM stays the caller's during the run; SIGINT is at most asyncio.run's own (which
    cancels the run, so its finished rows are committed) and both are the caller's after."""
    job = make_job(tmp_path, server, rows=5)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    during: list[Any] = []

    class Watching(NullProgress):
        def refresh(self, stats: Any) -> None:
            during.append(signal.getsignal(signal.SIGTERM))

    zbatch.run(job, api_key=KEY, progress=Watching())
    assert during and all(handler == before[1] for handler in during)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_plan_status_export_compact_and_read_results_are_library_calls(tmp_path, server):
    job = make_job(tmp_path, server, rows=6)
    zbatch.run(job, api_key=KEY)  # a nightly run; the input then grows
    write_jsonl(Path(job.input_path), prompt_rows(12))
    plan = zbatch.plan(job)
    assert (plan.rows, plan.done, plan.to_send) == (12, 6, 6)
    zbatch.run(job, api_key=KEY)
    status = zbatch.status(job.output_dir)
    assert (status.done, status.failed, status.pending) == (12, 0, 0)
    assert zbatch.plan(job).done == 12
    parts_before = len(list((Path(job.output_dir) / "results").glob("part-*.parquet")))
    compacted = {c.table: c for c in zbatch.compact(job.output_dir)}
    assert compacted["results"].parts_before == parts_before >= 2
    assert compacted["results"].parts_after == 1
    assert zbatch.export(job.output_dir, tmp_path / "all.parquet").rows == 12
    assert_each_row_answers_its_prompt(job, 12)


def test_compact_on_a_folder_that_is_not_an_outdir_is_refused_and_leaves_it_as_it_was(tmp_path):
    folder = tmp_path / "not-an-outdir"
    folder.mkdir()
    with pytest.raises(JobError, match="not a zbatch output directory"):
        zbatch.compact(folder)
    assert list(folder.iterdir()) == []


def test_unknown_error_types_to_retry_are_refused_before_anything_is_sent(tmp_path, server):
    """A library caller's misspelt type is the same error the CLI gives, not a silent no-op."""
    job = make_job(tmp_path, server)
    refused = r"^retry_failed: unknown error type\(s\) invalid_lable;"
    for call in (zbatch.run, zbatch.plan):
        with pytest.raises(JobError, match=refused):
            call(job, retry_failed=frozenset({"invalid_lable"}))
    assert server.stats()["requests"] == 0
    assert not Path(job.output_dir).exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"concurrency": -5}, "limits.concurrency must be greater than 0"),
        ({"base_url": ""}, "endpoint.base_url must be an http:// or https:// URL"),
        ({"base_url": "api.z.ai/api/paas/v4"}, "endpoint.base_url must be an http"),
        ({"base_url": "ftp://example.test/v1"}, "endpoint.base_url must be an http"),
        ({"base_url": "https://u:pw@example.test/v1"}, "must not hold credentials"),
        ({"temperature": 5.0}, "request.temperature must be between 0 and 2"),
        ({"max_tokens": 0}, "request.max_tokens must be at least 1"),
        ({"rpm": math.nan}, "limits.rpm must be a number"),
        ({"tpm": math.inf}, "limits.tpm must be greater than 0 and finite"),
        ({"timeout": math.inf}, "endpoint.timeout must be a finite number"),
        ({"concurrency": "8"}, "limits.concurrency must be a whole number"),
        ({"template": "Review: {text"}, "request.template cannot be read"),
        ({"template": "{}"}, "request.template fields must name input columns"),
        ({"template": "{text!z}"}, "request.template: '!z' is not a conversion"),
        ({"template": "{text!r:>99999999}"}, "the width in '{text:>99999999}' is too large"),
        ({"prices": {"glm-4.6": {"inptu": 5.0}}}, "prices.glm-4.6: unknown key 'inptu'"),
        ({"prices": {"glm-4.6": {"input": "5"}}}, "prices.glm-4.6.input must be a number"),
        ({"extra": {"messages": "oops"}}, "request.extra must not set 'messages'"),
        ({"json_fields": ("a:date",)}, "request.json_fields entry"),
    ],
)
def test_a_bad_job_value_raises_job_error_naming_the_setting(settings, message):
    with pytest.raises(JobError, match=re.escape(message)):
        Job(input_path="in.jsonl", output_dir="out", **settings)


def test_job_from_toml_takes_overrides_named_like_the_fields(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[input]\npath = "in.jsonl"\n[output]\ndir = "out"\n', encoding="utf-8")
    job = Job.from_toml(path, concurrency=8, output_dir="elsewhere")
    assert job.concurrency == 8
    assert job.input_path == str(tmp_path.resolve() / "in.jsonl")
    assert job.output_dir == str(Path.cwd().resolve() / "elsewhere")
    with pytest.raises(JobError, match="unknown setting"):
        Job.from_toml(path, concurency=8)


def test_zbatch_imports_and_runs_from_a_zip_without_installed_metadata(tmp_path):
    """As a Spark --py-files zip would ship it: no dist-info to look anything up in; the
    version is the one written in the code."""
    archive = tmp_path / "zbatch.zip"
    package = Path(zbatch.__file__).parent
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in package.rglob("*.py"):
            zipped.write(path, path.relative_to(package.parent))
    rows = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    script = f"""
import importlib.metadata as metadata, sys
real = metadata.version
def version(name):
    if name == "zbatch":
        raise metadata.PackageNotFoundError(name)
    return real(name)
metadata.version = version
sys.path.insert(0, {str(archive)!r})
import zbatch
assert zbatch.__file__.startswith({str(archive)!r}), zbatch.__file__
job = zbatch.Job(input_path={str(rows)!r}, output_dir={str(tmp_path / "out")!r}, simulate=True,
                 simulate_rate_limited=0.0, simulate_server_error=0.0, simulate_latency=0.0)
result = zbatch.run(job)
print(zbatch.__version__, result.exit_code, result.stats.ok)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [zbatch.__version__, "0", "3"]


def test_limit_sends_a_sample_and_the_next_run_goes_on_with_the_rest(tmp_path, server):
    job = make_job(tmp_path, server, rows=20)
    sample = zbatch.run(job, api_key=KEY, limit=5)
    assert (sample.exit_code, sample.stats.ok, sample.stats.pending) == (0, 5, 15)
    assert server.stats()["requests"] == 5
    rest = zbatch.run(job, api_key=KEY)
    assert (rest.stats.ok, rest.stats.skipped) == (15, 5)
    assert server.stats()["requests"] == 20
    assert_each_row_answers_its_prompt(job, 20)


def test_identical_deterministic_requests_are_sent_once_and_recorded_for_every_id(tmp_path, server):
    rows = [{"id": f"r{i}", "prompt": f"Same question {i % 3}"} for i in range(12)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job = Job(
        input_path=str(source),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        temperature=0,
        concurrency=4,
        prices={"glm-4.6": {"input": 1.0, "output": 1.0}},
    )
    result = zbatch.run(job, api_key=KEY)
    assert server.stats()["requests"] == 3
    assert (result.stats.ok, result.stats.deduplicated) == (12, 9)
    assert result.stats.saved_cost is not None and result.stats.saved_cost > 0
    table = zbatch.read_results(job.output_dir).to_pylist()
    by_id = {row["id"]: row for row in table}
    for row in rows:
        expected = answer_for([{"role": "user", "content": row["prompt"]}])
        assert by_id[row["id"]]["content"] == expected
    assert sorted(row["attempts"] for row in table) == [0] * 9 + [1] * 3
    paid = sum(row["prompt_tokens"] for row in table if row["attempts"])
    assert zbatch.status(job.output_dir).tokens.prompt == paid
    no_dedupe = {"output_dir": str(tmp_path / "no-dedupe"), "dedupe": False, "cache": "off"}
    again = Job(**{**job.__dict__, **no_dedupe})
    server_before = server.stats()["requests"]
    zbatch.run(again, api_key=KEY)
    assert server.stats()["requests"] - server_before == 12
