"""A dead endpoint stops a run (exit 69) instead of retrying for hours; a job whose first rows
all fail the same way stops (exit 3) instead of paying for every row. Real processes, the
loopback server."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    fast_job,
    input_and_outdir,
    outcome_ids,
    prompt_rows,
    read_table,
    run_against,
    run_zbatch,
    write_jsonl,
)
from zai_server import ZaiServer, answer_for

DOWN_AFTER = 2.0
HANG_GUARD = DOWN_AFTER + 30
DownRun = tuple[list[dict[str, str]], Path, Path, str]  # rows, input file, OUTDIR, job file


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_every_row_answered_once(out: Path, rows: list[dict[str, str]]) -> None:
    results = read_table(out / "results").to_pylist()
    assert Counter(r["id"] for r in results) == Counter(r["id"] for r in rows)
    prompts = {r["id"]: r["prompt"] for r in rows}
    for result in results:
        messages = [{"role": "user", "content": prompts[result["id"]]}]
        assert result["content"] == answer_for(messages)


@pytest.fixture
def down_run(tmp_path: Path) -> DownRun:
    """A run whose job retries a failing endpoint until it has been down for DOWN_AFTER s."""
    rows = prompt_rows(30)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    job = fast_job(tmp_path, down_after=DOWN_AFTER, max_retries=1000)
    return rows, inp, tmp_path / "out", job


def test_closed_port_exits_69_naming_the_last_error_then_a_healthy_run_finishes(
    down_run: DownRun,
) -> None:
    rows, inp, out, job = down_run
    dead = f"http://127.0.0.1:{closed_port()}/v1"

    proc = run_zbatch(
        "run", job, "-i", str(inp), "-o", str(out), "--base-url", dead, timeout=HANG_GUARD
    )

    assert proc.returncode == 69, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "connection" in message and "run the same command" in message
    assert dead in message and "down_after" in message
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 69

    with ZaiServer() as healthy:
        run_against(healthy, job, "-i", str(inp), "-o", str(out))
    assert_every_row_answered_once(out, rows)


def test_a_server_answering_only_503_exits_69_then_the_same_command_finishes(
    down_run: DownRun,
) -> None:
    rows, inp, out, job = down_run
    with ZaiServer(rates={"503": 1.0}) as srv:
        proc = run_against(srv, job, "-i", str(inp), "-o", str(out), expect=69, timeout=HANG_GUARD)
        assert "server_error 503" in proc.stderr
        assert srv.stats()["successes"] == 0

        srv.configure(rates={})
        run_against(srv, job, "-i", str(inp), "-o", str(out))
    assert_every_row_answered_once(out, rows)


def test_a_slow_but_alive_endpoint_never_trips_down_after(tmp_path: Path) -> None:
    """Every answer takes longer than down_after: no failure, so the endpoint is not down."""
    rows = prompt_rows(8)
    inp, out = input_and_outdir(tmp_path, rows)
    job = fast_job(tmp_path, down_after=0.3)
    with ZaiServer(latency=1.0) as srv:
        run_against(srv, job, "-i", str(inp), "-o", str(out), "-c", "8")
    assert_every_row_answered_once(out, rows)


def test_first_rows_all_failing_with_one_code_stop_with_exit_3_and_stay_pending(
    tmp_path: Path,
) -> None:
    """Z.AI 1211 (no such model) on every request: stop after 20 rows, not 300; name the code
    and the setting; the rows stay pending (retryable) for the fixed job."""
    rows = [{"id": f"r{i:03d}", "prompt": f"row {i} FAIL=1211*"} for i in range(300)]
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        proc = run_against(
            srv, fast_job(tmp_path), "-i", str(inp), "-o", str(out), "-c", "4", expect=3
        )
        sent = srv.stats()["requests"]
    message = proc.stderr.strip().splitlines()[-1]
    assert "1211" in message and "request.model" in message, message
    assert 20 <= sent <= 20 + 4
    errors = read_table(out / "errors").to_pylist()
    assert errors and all(e["retryable"] and e["error_code"] == "1211" for e in errors)
    status = json.loads(run_zbatch("status", str(out), "--json").stdout)
    assert status["failed"] == status["failed_retryable"] == len(errors)  # all sent again


def test_a_labels_prompt_that_never_yields_a_label_stops_after_the_first_rows(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"r{i:03d}", "prompt": f"row {i} LABEL=maybe"} for i in range(300)]
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        proc = run_against(
            srv, "-i", str(inp), "-o", str(out), "-c", "4", "--choices", "yes,no", expect=3
        )
        sent = srv.stats()["requests"]
    message = proc.stderr.strip().splitlines()[-1]
    assert "labels.choices" in message and "'maybe'" in message, message
    assert sent <= 2 * (20 + 4)  # one re-ask per row, not 600 requests
    results, errors = outcome_ids(out)
    assert not results
    assert len(errors) == len(set(errors)) >= 20
    assert all(e["answer"] == "maybe" for e in read_table(out / "errors").to_pylist())


def test_a_mix_of_answers_and_one_failing_code_is_not_systematic(tmp_path: Path) -> None:
    rows = [
        {"id": f"r{i:03d}", "prompt": f"row {i}" + (" FAIL=1214*" if i % 2 else "")}
        for i in range(60)
    ]
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "4", expect=1)
    results, errors = outcome_ids(out)
    assert len(results) == 30 and len(errors) == 30
    assert not any(e["retryable"] for e in read_table(out / "errors").to_pylist())
