"""Batch mode end to end: the installed zbatch script against the loopback Batch API server.

Each test checks content: every result row holds the answer to its own prompt
(``answer_for``), and the server's record shows every custom_id submitted exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from batch_server import BatchServer
from conftest import (
    outcome_ids,
    prompt_rows,
    read_table,
    run_zbatch,
    start_zbatch,
    stop_process,
    wait_for,
    write_jsonl,
)
from zai_server import answer_for

import zbatch
from zbatch.batch.collect import line_outcome
from zbatch.outcome import Failure
from zbatch.providers import ZAI, provider_for

FILTERED = {"index": 0, "finish_reason": "sensitive", "message": {"content": ""}}
TIMING = ["latency_ms", "completed_at", "failed_at", "request_id"]


def expected_answer(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}])


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with BatchServer() as srv:
        yield srv


def batch_run(
    srv: BatchServer, tmp_path: Path, *args: str, expect: int | None = 0, rows: int = 25
) -> subprocess.CompletedProcess[str]:
    """``zbatch run --mode batch`` on tmp_path/in.jsonl (written once) into tmp_path/out."""
    source = tmp_path / "in.jsonl"
    if not source.exists():
        write_jsonl(source, prompt_rows(rows))
    proc = run_zbatch(
        "run",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "out"),
        "--base-url",
        srv.base_url,
        "--mode",
        "batch",
        "--poll-seconds",
        "0.01",
        "--backoff-base",
        "0.01",
        *args,
    )
    if expect is not None:
        assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def check_answers(outdir: Path, rows: list[dict[str, Any]]) -> None:
    """Every row has exactly one result, holding its own prompt's answer."""
    table = read_table(outdir / "results")
    got = dict(
        zip(table.column("id").to_pylist(), table.column("content").to_pylist(), strict=True)
    )
    assert len(got) == table.num_rows == len(rows)
    for row in rows:
        assert got[row["id"]] == expected_answer(row["prompt"])


def test_a_batch_run_answers_every_row_once_through_the_batch_api(
    server: BatchServer, tmp_path: Path
) -> None:
    rows = prompt_rows(25)
    proc = batch_run(server, tmp_path, "--part-rows", "10000", rows=25)
    check_answers(tmp_path / "out", rows)
    table = read_table(tmp_path / "out" / "results")
    assert set(table.column("attempts").to_pylist()) == {1}
    assert table.column("latency_ms").null_count == table.num_rows
    assert server.submitted == {row["id"]: 1 for row in rows}
    assert server.requests["chat"] == 0
    assert "rows ok" in proc.stdout
    ledger = sorted((tmp_path / "out" / "batches").glob("*.json"))
    assert [json.loads(p.read_text())["state"] for p in ledger] == ["collected"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"]["ok"] == 25


def test_files_hold_at_most_batch_max_rows_and_a_rerun_sends_nothing(
    server: BatchServer, tmp_path: Path
) -> None:
    (tmp_path / "job.toml").write_text("[run]\nbatch_max_rows = 10\n")
    batch_run(server, tmp_path, str(tmp_path / "job.toml"))
    assert [u["lines"] for u in server.uploads] == [10, 10, 5]
    check_answers(tmp_path / "out", prompt_rows(25))
    batch_run(server, tmp_path, str(tmp_path / "job.toml"))
    assert len(server.uploads) == 3 and max(server.submitted.values()) == 1


def test_live_and_batch_runs_give_the_same_table(server: BatchServer, tmp_path: Path) -> None:
    """The same job with labels and a keep column, live and in batch mode: read_results tables
    are equal apart from timing columns. (label_retries = 0: a batch cannot ask again.)"""
    rows = [
        {"id": f"r{n:04d}", "prompt": f"Say LABEL={'Positive' if n % 3 else 'negative!'}", "n": n}
        for n in range(40)
    ]
    rows.append({"id": "r-bad", "prompt": "Say LABEL=maybe", "n": 99})
    write_jsonl(tmp_path / "in.jsonl", rows)
    tables = {}
    for mode in ("online", "batch"):
        job = zbatch.Job(
            input_path=str(tmp_path / "in.jsonl"),
            output_dir=str(tmp_path / mode),
            base_url=server.base_url,
            choices=("positive", "negative"),
            keep_columns=("n",),
            label_retries=0,
            mode=mode,
            poll_seconds=0.01,
        )
        result = zbatch.run(job, api_key="zk-live-and-batch-0123456789")
        assert result.exit_code == 1, result.stopped  # r-bad's label is not a choice
        tables[mode] = zbatch.read_results(job.output_dir).drop_columns(TIMING).sort_by("id")
    assert tables["online"].equals(tables["batch"])
    labels = dict(
        zip(*(tables["batch"].column(c).to_pylist() for c in ("id", "label")), strict=True)
    )
    assert labels["r0000"] == "negative" and labels["r0001"] == "positive"
    keep = dict(zip(*(tables["batch"].column(c).to_pylist() for c in ("id", "n")), strict=True))
    assert (keep["r0000"], keep["r0039"]) == (0, 39)
    assert server.requests["chat"] == 41 and sum(server.submitted.values()) == 41


def test_batch_answers_fill_the_response_cache_and_batch_mode_reads_it(
    server: BatchServer, tmp_path: Path
) -> None:
    """A deterministic job's batch answers enter the cache when committed: the same job live
    into another OUTDIR sends nothing, and so does batch mode into a third."""
    rows = prompt_rows(12)
    (tmp_path / "job.toml").write_text("[request]\ntemperature = 0\n")
    batch_run(server, tmp_path, str(tmp_path / "job.toml"), rows=12)
    check_answers(tmp_path / "out", rows)
    assert sum(server.submitted.values()) == 12
    for mode, outdir in (("online", "live"), ("batch", "again")):
        job = zbatch.Job(
            input_path=str(tmp_path / "in.jsonl"),
            output_dir=str(tmp_path / outdir),
            base_url=server.base_url,
            temperature=0,
            mode=mode,
            poll_seconds=0.01,
        )
        result = zbatch.run(job, api_key="zk-batch-cache-0123456789")
        assert result.exit_code == 0, result.stopped
        check_answers(tmp_path / outdir, rows)
        assert read_table(tmp_path / outdir / "results").column("cached").to_pylist() == [True] * 12
    assert server.requests["chat"] == 0
    assert sum(server.submitted.values()) == 12 and len(server.uploads) == 1


def test_error_lines_become_error_rows_classified_as_live(
    server: BatchServer, tmp_path: Path
) -> None:
    rows = [
        *prompt_rows(5),
        {"id": "bad-request", "prompt": "FAIL=1214"},
        {"id": "server-error", "prompt": "FAIL=500"},
        {"id": "filtered", "prompt": "FAIL=sensitive"},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    proc = batch_run(server, tmp_path, expect=1)
    errors = read_table(tmp_path / "out" / "errors").to_pylist()
    by_id = {e["id"]: e for e in errors}
    assert len(errors) == 3
    assert (by_id["bad-request"]["error_type"], by_id["bad-request"]["retryable"]) == (
        "bad_request",
        False,
    )
    assert by_id["bad-request"]["error_code"] == "1214"
    assert (by_id["server-error"]["error_type"], by_id["server-error"]["retryable"]) == (
        "server_error",
        True,
    )
    assert by_id["filtered"]["error_type"] == "content_filter"
    check_answers(tmp_path / "out", rows[:5])
    assert "rows failed" in proc.stdout
    # The next run submits only the row whose error is retryable.
    batch_run(server, tmp_path, expect=None)
    assert server.submitted["server-error"] == 2
    assert server.submitted["bad-request"] == 1 and server.submitted["row00000"] == 1


def test_an_expired_batch_leaves_its_rows_pending_and_finish_online_sends_them_live(
    server: BatchServer, tmp_path: Path
) -> None:
    rows = prompt_rows(20)
    server.expire_next(after_lines=8)
    proc = batch_run(server, tmp_path, expect=1, rows=20)
    assert "12 rows were left unanswered" in proc.stderr
    done, errors = outcome_ids(tmp_path / "out")
    assert len(done) == 8 and errors == []
    server.expire_next(after_lines=5)
    batch_run(server, tmp_path, "--finish-online", rows=20)
    check_answers(tmp_path / "out", rows)
    assert server.requests["chat"] == 7  # what the second (expired) batch left
    assert sorted(server.submitted.values()) == [1] * 8 + [2] * 12


def test_an_expired_batch_rows_go_in_a_new_batch_on_the_next_run(
    server: BatchServer, tmp_path: Path
) -> None:
    server.expire_next(after_lines=5)
    batch_run(server, tmp_path, expect=1, rows=12)
    batch_run(server, tmp_path, rows=12)
    check_answers(tmp_path / "out", prompt_rows(12))
    assert sorted(server.submitted.values()) == [1] * 5 + [2] * 7


def test_a_failed_validation_leaves_every_row_pending(server: BatchServer, tmp_path: Path) -> None:
    server.fail_next_validation("line 3: messages must not be empty")
    proc = batch_run(server, tmp_path, expect=1, rows=6)
    assert outcome_ids(tmp_path / "out") == ([], [])
    assert "messages must not be empty" in proc.stderr
    batch_run(server, tmp_path, rows=6)
    check_answers(tmp_path / "out", prompt_rows(6))


def test_no_wait_submits_and_exits_10_then_the_same_command_collects(tmp_path: Path) -> None:
    with BatchServer(advance="manual") as srv:
        proc = batch_run(srv, tmp_path, "--no-wait", expect=10, rows=7)
        assert "run the same command later" in proc.stderr
        assert outcome_ids(tmp_path / "out") == ([], [])
        status = run_zbatch("status", str(tmp_path / "out"))
        assert "validating" in status.stdout and "batch 00001" in status.stdout
        where = ["-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")]
        plan = run_zbatch("validate", *where, "--mode", "batch", "--base-url", srv.base_url)
        assert "0 files -> 0 batches" in plan.stdout, plan.stdout + plan.stderr
        assert "7 rows wait in open batches" in plan.stdout
        batch_run(srv, tmp_path, "--no-wait", expect=10, rows=7)  # still running: nothing new
        srv.settle()
        batch_run(srv, tmp_path, "--no-wait", rows=7)
        check_answers(tmp_path / "out", prompt_rows(7))
        assert srv.submitted == {row["id"]: 1 for row in prompt_rows(7)}
        assert len(srv.uploads) == 1


def test_sigint_while_waiting_exits_130_and_the_next_run_collects(tmp_path: Path) -> None:
    with BatchServer(advance="manual") as srv:
        write_jsonl(tmp_path / "in.jsonl", prompt_rows(9))
        args = ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out")]
        proc = start_zbatch(*args, "--base-url", srv.base_url, "--mode", "batch")
        wait_for(lambda: srv.requests["get"] >= 1)
        _, err = stop_process(proc, signal.SIGINT)
        assert proc.returncode == 130, err
        assert "keep running at the provider" in err
        srv.settle()
        batch_run(srv, tmp_path, rows=9)
        check_answers(tmp_path / "out", prompt_rows(9))
        assert max(srv.submitted.values()) == 1 and len(srv.uploads) == 1


def test_cancel_cancels_open_batches_and_their_finished_lines_are_collected(
    tmp_path: Path,
) -> None:
    with BatchServer(advance="manual", lines_per_step=4) as srv:
        batch_run(srv, tmp_path, "--no-wait", expect=10, rows=10)
        srv.step(times=2)  # in_progress, 4 lines answered
        proc = run_zbatch("cancel", str(tmp_path / "out"))
        assert proc.returncode == 0, proc.stderr
        assert "1 batches cancelled" in proc.stdout
        srv.step()
        batch_run(srv, tmp_path, expect=1, rows=10)
        done, _ = outcome_ids(tmp_path / "out")
        assert len(done) == 4


def test_a_base_url_without_batch_api_exits_2_and_loses_nothing(tmp_path: Path) -> None:
    with BatchServer(no_batch_api="1222") as srv:
        proc = batch_run(srv, tmp_path, expect=2, rows=3)
    assert "has no Batch API" in proc.stderr and "--mode online" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_balance_on_create_exits_3_and_the_next_run_reuses_the_upload(
    server: BatchServer, tmp_path: Path
) -> None:
    server.inject("create", code="1113")
    proc = batch_run(server, tmp_path, expect=3, rows=5)
    assert "top up" in proc.stderr
    batch_run(server, tmp_path, rows=5)
    check_answers(tmp_path / "out", prompt_rows(5))
    assert len(server.uploads) == 1 and max(server.submitted.values()) == 1


def test_short_ids_are_sent_mapped_and_come_back_under_their_own_ids(tmp_path: Path) -> None:
    rows = [{"id": str(n), "prompt": f"short id {n}"} for n in range(12)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    with BatchServer(models=frozenset({"glm-4.6"})) as srv:
        batch_run(srv, tmp_path)
        assert all(custom_id.startswith("zbrow-") for custom_id in srv.submitted)
    check_answers(tmp_path / "out", rows)


def test_dry_run_shows_files_batches_and_the_batch_cost(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(25))
    (tmp_path / "job.toml").write_text('[run]\nmode = "batch"\nbatch_max_rows = 10\n')
    args = [str(tmp_path / "job.toml"), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o")]
    batch = run_zbatch("validate", *args)
    live = run_zbatch("validate", *args, "--mode", "online")
    assert batch.returncode == live.returncode == 0, batch.stderr
    assert "3 files -> 3 batches" in batch.stdout
    cost = [
        float(line.split("$")[1].split()[0])
        for proc in (batch, live)
        for line in proc.stdout.splitlines()
        if line.startswith("cost")
    ]
    assert cost[0] == pytest.approx(cost[1] / 2, abs=1e-4)


def test_simulate_rehearses_batch_mode_offline(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(30))
    job = zbatch.Job(
        input_path=str(tmp_path / "in.jsonl"),
        output_dir=str(tmp_path / "out"),
        mode="batch",
        simulate=True,
        simulate_rate_limited=0.0,
        simulate_server_error=0.0,
    )
    result = zbatch.run(job)
    assert result.exit_code == 0, result.stopped
    table = zbatch.read_results(job.output_dir)
    assert table.num_rows == 30
    assert pc.all(pc.starts_with(table.column("content"), "Simulated answer")).as_py()
    status = zbatch.status(job.output_dir)
    assert [b["state"] for b in status.batches] == ["completed"]


def test_force_keeps_an_earlier_requests_batch_out_of_the_new_results(tmp_path: Path) -> None:
    """A batch still open when --force starts a new generation is settled, but its answers
    (to the old request) never land in the new results; the rows are sent anew."""
    with BatchServer(advance="manual") as srv:
        batch_run(srv, tmp_path, "--no-wait", expect=10, rows=4)
        srv.settle()
        srv.configure(advance="poll")
        batch_run(srv, tmp_path, "--system", "Answer briefly.", "--force", rows=4)
        assert sorted(srv.submitted.values()) == [2] * 4
        assert len(srv.batches()) == 2
    table = read_table(tmp_path / "out" / "results")
    assert table.num_rows == 4  # one generation: the new batch's answers only
    ledger = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "batches").glob("*.json"))
    ]
    assert [r["state"] for r in ledger] == ["collected", "collected"]
    assert ledger[0]["fingerprint"] != ledger[1]["fingerprint"]


def test_the_batch_endpoint_follows_the_provider() -> None:
    """Z.AI / bigmodel name the chat path /v4/...; OpenAI /v1/... and needs a 24 h window."""
    zai = provider_for("https://open.bigmodel.cn/api/paas/v4")
    assert (zai.batch_endpoint, zai.batch_window) == ("/v4/chat/completions", None)
    openai = provider_for("https://api.openai.com/v1/")
    assert (openai.batch_endpoint, openai.batch_window) == ("/v1/chat/completions", "24h")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"custom_id": "a", "response": None, "error": {"code": "batch_expired"}}, None),
        (
            {"custom_id": "a", "response": None, "error": {"code": "1214", "message": "bad"}},
            ("bad_request", False),
        ),
        (
            {"response": {"status_code": 429, "body": {"error": {"code": "1302"}}}},
            ("rate_limited", True),
        ),
        (
            {
                "response": {
                    "status_code": 200,
                    "body": {"choices": [{"finish_reason": "sensitive"}]},
                }
            },
            ("content_filter", False),
        ),
    ],
)
def test_error_lines_are_classified_with_the_live_code_table(
    line: dict[str, Any], expected: tuple[str, bool] | None
) -> None:
    outcome = line_outcome(line, ZAI)
    if expected is None:
        assert outcome is None
    else:
        assert isinstance(outcome, Failure)
        assert (outcome.error_type, outcome.retryable) == expected


def test_batch_mode_refuses_shards_with_a_clear_error(tmp_path: Path) -> None:
    """The provider runs the batches: one run submits and collects them all."""
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(2))
    proc = run_zbatch(
        "run",
        "-i",
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out"),
        "--mode",
        "batch",
        "--shard",
        "0/2",
    )
    assert proc.returncode == 2
    assert "--mode batch does not go with --shard" in proc.stderr
