"""What a new user trips over (issue 22): every message true, every command behaving as the
README says. Through the installed script, against the loopback servers, each test asserting
the message a user reads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from batch_server import BatchServer
from conftest import (
    ZBATCH,
    outcome_ids,
    prompt_rows,
    read_table,
    run_against,
    run_zbatch,
    wait_for,
    write_jsonl,
    zbatch_env,
)
from zai_server import ZaiServer, answer_for

import zbatch
import zbatch.api

# A rehearsal without simulated failures: its outcome is known row by row.
CALM = "[simulate]\nrate_limited = 0\nserver_error = 0\n"


def calm_job(tmp_path: Path, rows: int = 6, extra: str = "") -> tuple[Path, Path]:
    """A --simulate job over ``rows`` prompt rows, and the OUTDIR it names."""
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(rows))
    job = tmp_path / "job.toml"
    job.write_text(f'[input]\npath = "in.jsonl"\n[output]\ndir = "out"\n{CALM}{extra}')
    return job, tmp_path / "out"


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a refused command: no traceback, and the line that says why."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- 1. zbatch errors on an OUTDIR without failed rows ---------------------------------------


def test_errors_on_an_outdir_without_failed_rows_says_there_are_none(tmp_path):
    job, out = calm_job(tmp_path)
    assert run_zbatch("run", str(job), "--simulate", "-q").returncode == 0
    rehearsal = f"{out}.simulated"
    proc = run_zbatch("errors", rehearsal)
    assert (proc.returncode, proc.stdout) == (0, f"no failed rows in {rehearsal}\n"), proc.stderr
    as_json = run_zbatch("errors", rehearsal, "--json")
    assert (as_json.returncode, json.loads(as_json.stdout)) == (0, [])


# --- 2. malformed object-store URLs ----------------------------------------------------------


@pytest.mark.parametrize("url", ["s3:/labels/out", "s3://", "gs:", "gs:bucket/out", "S3:///x"])
def test_a_malformed_store_url_is_refused_and_never_becomes_a_local_folder(tmp_path, url):
    job, _ = calm_job(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_zbatch("run", str(job), "--simulate", "-o", url, cwd=tmp_path)
    assert proc.returncode == 2
    scheme = url[:2].lower()
    assert f"{url} is not a valid {scheme}:// URL: write it as {scheme}://BUCKET/PATH" in (
        one_error_line(proc)
    )
    as_input = run_zbatch("run", str(job), "--simulate", "-i", url, cwd=tmp_path)
    assert as_input.returncode == 2 and "is not a valid" in one_error_line(as_input)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


def test_read_commands_refuse_a_malformed_store_url(tmp_path):
    for args in (["status", "s3:/x"], ["errors", "gs:"], ["logs", "s3://"]):
        proc = run_zbatch(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "is not a valid" in proc.stderr, proc.stderr
    job, out = calm_job(tmp_path)
    run_zbatch("run", str(job), "--simulate", "-q")
    proc = run_zbatch("export", f"{out}.simulated", "-o", "s3:/x.csv", cwd=tmp_path)
    assert proc.returncode == 2
    assert "export file s3:/x.csv is not a valid s3:// URL" in one_error_line(proc)
    assert not (tmp_path / "s3:").exists()


# --- 5. a wrong-model stop, then the same command with the model fixed -----------------------


def test_a_job_stopped_for_a_wrong_model_goes_on_with_the_fixed_model(tmp_path):
    rows = prompt_rows(30)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with ZaiServer(models="glm-4.6") as srv:
        args = ["-i", str(source), "-o", str(out), "-c", "2"]
        wrong = run_against(srv, *args, "--model", "glm-4.66", expect=3)
        assert "fix request.model (the model does not exist), then run the same command" in (
            one_error_line(wrong)
        )
        fixed = run_against(srv, *args, "--model", "glm-4.6")
        assert "no answer was committed under the old ones" in fixed.stderr
    table = read_table(out / "results")
    ids, contents = table.column("id").to_pylist(), table.column("content").to_pylist()
    answers = dict(zip(ids, contents, strict=True))
    messages = {row["id"]: [{"role": "user", "content": row["prompt"]}] for row in rows}
    assert answers == {row_id: answer_for(messages[row_id]) for row_id in messages}
    assert set(table.column("model").to_pylist()) == {"glm-4.6"}


def test_a_request_change_is_still_refused_once_an_answer_is_committed(tmp_path, server):
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    args = ["-i", str(source), "-o", str(tmp_path / "out")]
    run_against(server, *args)
    proc = run_against(server, *args, "--model", "glm-4.5", expect=2)
    assert "holds results of a different request (model changed)" in one_error_line(proc)


# --- 6. --limit, batch-only flags, errors --type ----------------------------------------------


def test_a_limit_run_with_rows_left_says_they_are_pending(tmp_path, server):
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(10))
    out = tmp_path / "out"
    proc = run_against(server, "-i", str(source), "-o", str(out), "--limit", "3")
    outcome = "stopped at --limit: 7 rows pending (run again for the rest)"
    assert f"outcome                  {outcome}\n" in proc.stdout
    assert "finished" not in proc.stdout
    status = run_zbatch("status", str(out)).stdout
    assert f"last run         {outcome} (exit 0)" in status
    assert "pending          7" in status
    done = run_against(server, "-i", str(source), "-o", str(out), "--limit", "7")
    assert "outcome                  finished\n" in done.stdout  # nothing left: finished


@pytest.mark.parametrize("flag", ["--no-wait", "--finish-online", "--poll-seconds=5"])
def test_batch_mode_flags_without_batch_mode_are_a_usage_error(tmp_path, flag):
    job, out = calm_job(tmp_path)
    proc = run_zbatch("run", str(job), "--simulate", flag)
    assert proc.returncode == 2
    name = flag.partition("=")[0]
    assert f"{name} goes only with --mode batch" in proc.stderr
    assert not out.with_name("out.simulated").exists()  # nothing ran


def test_errors_type_is_checked_like_retry_failed(tmp_path):
    job, out = calm_job(tmp_path)
    run_zbatch("run", str(job), "--simulate", "-q")
    proc = run_zbatch("errors", f"{out}.simulated", "--type", "nonsense")
    assert proc.returncode == 2
    assert "Invalid value for '--type': unknown error type(s) nonsense; known: " in proc.stderr
    with pytest.raises(zbatch.JobError, match="unknown error type"):
        zbatch.api.failures(f"{out}.simulated", error_type="nonsense")


# --- 7. expected states are not errors ---------------------------------------------------------


def test_no_wait_exit_10_prints_no_error(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(5))
    with BatchServer() as srv:
        args = ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")]
        proc = run_zbatch(*args, "--base-url", srv.base_url, "--mode", "batch", "--no-wait")
    assert proc.returncode == 10, proc.stderr
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "Still running: 1 batches are running at the provider (5 rows); run the same command "
        "later to collect them"
    )


# --- 8. no stale batch lines ---------------------------------------------------------------------


def test_status_lists_no_stale_batch_after_a_failed_batch_run_and_a_finished_online_run(
    tmp_path,
):
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(6))
    out = tmp_path / "out"
    args = ["-i", str(source), "-o", str(out)]
    with BatchServer(no_batch_api="1222") as srv:
        failed = run_zbatch("run", *args, "--base-url", srv.base_url, "--mode", "batch")
    assert failed.returncode == 2 and "has no Batch API" in failed.stderr
    with ZaiServer() as srv:
        run_against(srv, *args)
    status = run_zbatch("status", str(out)).stdout
    assert "done             6" in status and "pending          0" in status
    assert "batch 0" not in status, status


# --- 10. summary, status and errors agree; the retry hint only where a retry helps ----------


def test_summary_status_and_errors_agree_on_failed_rows_with_duplicate_ids(tmp_path, server):
    rows = [
        {"id": "a", "prompt": "one"},
        {"id": "a", "prompt": "one again"},
        {"id": "b", "prompt": "two"},
        {"id": "b", "prompt": "two again"},
        {"id": "c", "prompt": "three"},
        {"prompt": "no id"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    run_against(server, "-i", str(source), "-o", str(out), expect=1)
    summary = json.loads((out / "summary.json").read_text())
    status = json.loads(run_zbatch("status", str(out), "--json").stdout)
    groups = json.loads(run_zbatch("errors", str(out), "--json").stdout)
    by_type = {group["error_type"]: group["count"] for group in groups}
    assert summary["rows"]["failed"] == status["failed"] == sum(by_type.values()) == 3
    assert summary["errors"] == status["errors"] == by_type == {"duplicate_id": 2, "missing_id": 1}
    assert status["pending"] == 0
    text = run_zbatch("errors", str(out)).stdout
    assert "--retry-failed" not in text
    assert text.splitlines()[-1] == (
        "- duplicate_id, missing_id: fix those rows in the input; a retry cannot fix them"
    )


def test_errors_offers_retry_failed_for_the_types_it_fixes_and_shows_paid_answers(tmp_path, server):
    rows = [
        {"id": "lab", "prompt": "Pick LABEL=maybe"},
        {"id": "cf", "prompt": "Blocked FAIL=1301*"},
        {"id": "srv", "prompt": "Flaky FAIL=500*"},
        {"id": "yes", "prompt": "Pick LABEL=yes"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    args = ["-i", str(source), "-o", str(out), "--choices", "yes,no", "--max-retries", "0"]
    run_against(server, *args, expect=1)
    text = run_zbatch("errors", str(out), "--answers").stdout
    assert "  answer lab: 'maybe'" in text
    assert "answer cf" not in text  # blocked: nothing was answered
    assert text.splitlines()[-3:] == [
        "3 failed rows",
        "- 1 retryable: the next run of the same command sends them again",
        "- to send the others again: zbatch run ... --retry-failed content_filter,invalid_label",
    ]
    groups = json.loads(run_zbatch("errors", str(out), "--answers", "--json").stdout)
    assert {g["error_type"]: g["answers"] for g in groups}["invalid_label"] == {"lab": "maybe"}


# --- 13. the smaller ones -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["", "   "])
def test_an_empty_model_is_refused(tmp_path, model):
    with pytest.raises(zbatch.JobError, match=r"request\.model must name a model"):
        zbatch.Job(input_path="in.jsonl", output_dir=str(tmp_path / "o"), model=model)


def test_export_with_input_does_not_repeat_keep_columns(tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "product": f"p{i}", "stars": i} for i in range(4)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "in.jsonl"\nkeep_columns = ["product", "stars"]\n'
        f'[output]\ndir = "out"\n{CALM}'
    )
    run_zbatch("run", str(job), "--simulate", "-q")
    target = tmp_path / "export.jsonl"
    proc = run_zbatch("export", str(tmp_path / "out.simulated"), "-o", str(target), "--with-input")
    assert proc.returncode == 0, proc.stderr
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    names = list(exported[0])
    assert names.count("product") == 1 and "input_product" not in names
    assert names.count("stars") == 1 and "input_stars" not in names
    assert "input_prompt" in names or "prompt" in names  # the other input columns are there
    assert [(r["id"], r["product"], r["stars"]) for r in exported] == [
        (r["id"], r["product"], r["stars"]) for r in rows
    ]


def test_cancel_on_an_online_outdir_says_there_is_nothing_to_cancel(tmp_path):
    job, out = calm_job(tmp_path)
    run_zbatch("run", str(job), "--simulate", "-q")
    proc = run_zbatch("cancel", f"{out}.simulated")
    assert proc.returncode == 2
    assert "holds an online run: it has no batches to cancel" in one_error_line(proc)


def test_status_of_a_rehearsed_outdir_suggests_its_simulated_twin(tmp_path):
    job, out = calm_job(tmp_path)
    run_zbatch("run", str(job), "--simulate", "-q")
    for command in ("status", "errors", "logs"):
        proc = run_zbatch(command, str(out))
        assert proc.returncode == 2
        assert f"{out} does not exist; did you mean {out}.simulated" in proc.stderr
    with pytest.raises(zbatch.JobError, match=r"did you mean .*out\.simulated"):
        zbatch.status(out)


# --- the simulated Batch API: a rehearsal of exactly what a batch run does ---------------------


def test_a_batch_rehearsal_ends_cleanly_with_every_row_answered(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(40))
    job = tmp_path / "job.toml"  # the default [simulate] failure rates
    job.write_text('[input]\npath = "in.jsonl"\n[output]\ndir = "out"\n')
    proc = run_zbatch("run", str(job), "--simulate", "--mode", "batch", "--poll-seconds", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "rate_limited" not in proc.stdout + proc.stderr
    assert "Error" not in proc.stderr
    assert "outcome                  finished\n" in proc.stdout
    for step in ("batch file 00001: 40 rows", "created for file 00001", "collected: 40 rows"):
        assert step in proc.stderr
    results = read_table(tmp_path / "out.simulated" / "results")
    assert sorted(results.column("id").to_pylist()) == [r["id"] for r in prompt_rows(40)]
    assert {m.endswith("-simulated") for m in results.column("model").to_pylist()} == {True}


def test_a_batch_rehearsal_with_no_wait_is_collected_by_the_same_command_later(tmp_path):
    job, out = calm_job(tmp_path, rows=12, extra="latency = 5\n")  # 16 lines per 5 s
    command = ["run", str(job), "--simulate", "--mode", "batch", "--no-wait"]
    first = run_zbatch(*command)
    assert first.returncode == 10, first.stderr
    assert "Still running: 1 batches are running at the provider (12 rows)" in first.stderr
    status = run_zbatch("status", f"{out}.simulated").stdout
    assert "batch 00001      batch-sim-" in status
    # Without --no-wait the same command waits for the batch and collects it.
    second = run_zbatch(*command[:-1], "--poll-seconds", "0.5")
    assert second.returncode == 0, second.stderr
    assert "collected: 12 rows answered" in second.stderr
    done, failed = outcome_ids(Path(f"{out}.simulated"))
    assert sorted(done) == [r["id"] for r in prompt_rows(12)] and failed == []


def test_a_cancelled_batch_rehearsal_leaves_its_rows_pending(tmp_path):
    job, out = calm_job(tmp_path, rows=8, extra="latency = 3600\n")  # never done by itself
    command = ["run", str(job), "--simulate", "--mode", "batch"]
    assert run_zbatch(*command, "--no-wait").returncode == 10
    cancel = run_zbatch("cancel", f"{out}.simulated")
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.splitlines()[-1].startswith("1 batches cancelled")
    proc = run_zbatch(*command, "--poll-seconds", "0.2")
    assert proc.returncode == 1
    assert "8 rows were left unanswered by expired, cancelled or failed batches" in (
        one_error_line(proc)
    )
    assert outcome_ids(Path(f"{out}.simulated")) == ([], [])


# --- run --json, logs -f ----------------------------------------------------------------------


def test_run_json_prints_the_summary_and_nothing_else_on_stdout(tmp_path):
    job, out = calm_job(tmp_path, rows=5)
    proc = run_zbatch("run", str(job), "--simulate", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert summary["rows"]["ok"] == 5 and summary["exit_code"] == 0
    assert summary["output"] == f"{out}.simulated"
    assert summary == {
        **json.loads((tmp_path / "out.simulated" / "summary.json").read_text()),
        "output": f"{out}.simulated",
    }
    assert "end: finished" in proc.stderr  # the log lines went to stderr


def test_logs_prints_run_log_and_follows_it_until_interrupted(tmp_path):
    job, out = calm_job(tmp_path, rows=3)
    run_zbatch("run", str(job), "--simulate", "-q")
    outdir = f"{out}.simulated"
    whole = run_zbatch("logs", outdir)
    assert whole.returncode == 0
    assert whole.stdout == (tmp_path / "out.simulated" / "run.log").read_text()
    assert run_zbatch("logs", outdir, "-n", "1").stdout.startswith(whole.stdout.splitlines()[-1])
    followed = tmp_path / "followed.txt"
    with followed.open("w") as sink:
        proc = subprocess.Popen(
            [ZBATCH, "logs", outdir, "-f", "--interval", "0.1"],
            env=zbatch_env(),
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: followed.read_text().count("end: finished") == 1)
            write_jsonl(tmp_path / "in.jsonl", prompt_rows(5))  # two rows more
            run_zbatch("run", str(job), "--simulate", "-q")
            wait_for(lambda: followed.read_text().count("end: finished") == 2)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    assert followed.read_text() == (tmp_path / "out.simulated" / "run.log").read_text()


def test_python_m_zbatch_has_every_new_command():
    proc = subprocess.run(
        [sys.executable, "-m", "zbatch", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("errors", "logs", "cancel"):
        assert f"  {command} " in proc.stdout


# --- "did you mean" for a model without a price -----------------------------------------------


def test_a_model_name_not_in_the_price_table_gets_a_did_you_mean(tmp_path):
    job, _ = calm_job(tmp_path)
    hint = "no price for model glm-4.66; did you mean glm-4.6?"
    plan = run_zbatch("validate", str(job), "--model", "glm-4.66")
    assert plan.returncode == 0 and f"cost       unknown: {hint}" in plan.stdout
    proc = run_zbatch("run", str(job), "--simulate", "--model", "glm-4.66")
    assert proc.returncode == 0
    assert proc.stderr.startswith(f"Note: {hint} (if the name is right, add it to [prices]")
    budget = run_zbatch("run", str(job), "--simulate", "--model", "glm-4.66", "--max-cost", "1")
    assert budget.returncode == 2
    assert f"limits.max_cost needs a price: {hint}" in one_error_line(budget)
    unlike = run_zbatch("validate", str(job), "--model", "my-local-model")
    assert "no price for model my-local-model (if the name is right" in unlike.stdout
