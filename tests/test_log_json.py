"""--log-format json: every line on stderr and in run.log is a JSON object, each state change
(started, paused for quota, limit changed, stopped, finished) appears once, and each carries
the run id, shard, counts and spend — never the API key."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import (
    TEST_KEY,
    fast_job,
    input_and_outdir,
    prompt_rows,
    run_against,
)
from zai_server import ZaiServer


def events(text: str) -> list[dict[str, Any]]:
    """Every line parsed; a line that is not a JSON object fails the test."""
    parsed = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(event, dict) for event in parsed)
    return parsed


def run_events(stderr: str, out: Path) -> list[dict[str, Any]]:
    """The run's events, as run.log holds them and as stderr showed them (the same ones)."""
    logged = events((out / "run.log").read_text())
    shown = [e for e in events(stderr) if e["event"] != "progress"]
    assert [(e["event"], e["message"]) for e in shown] == [
        (e["event"], e["message"]) for e in logged
    ]
    assert TEST_KEY not in stderr and TEST_KEY not in (out / "run.log").read_text()
    for event in logged:
        assert {"ts", "level", "event", "message", "run_id", "shard", "rows", "cost_usd"} <= set(
            event
        )
    assert len({e["run_id"] for e in logged}) == 1
    assert {e["shard"] for e in logged} == {"all"}
    return logged


def test_a_paused_throttled_run_logs_each_state_change_once(tmp_path: Path) -> None:
    # One row meets the quota once (its reset already past: a 1 s pause), and a server that
    # takes 2 requests at a time rejects the rest of 6 for concurrency.
    rows = [*prompt_rows(29), {"id": "quota", "prompt": "Over quota FAIL=1304"}]
    inp, out = input_and_outdir(tmp_path, rows)
    job = fast_job(tmp_path, backoff_base=0.05, backoff_cap=1.0, quota_wait_seconds=60)
    server = ZaiServer(quota_reset="2020-01-01 00:00:00", latency=0.02, max_inflight=2)
    with server as srv:
        args = (job, "-i", str(inp), "-o", str(out), "-c", "6", "--wait-for-quota")
        proc = run_against(srv, *args, "--log-format", "json")
        err = proc.stderr
        rejected = srv.stats()["errors_by_code"].get("1302", 0)
    logged = run_events(err, out)
    kinds = Counter(e["event"] for e in logged)
    assert kinds["started"] == kinds["paused_for_quota"] == kinds["input_read"] == 1
    assert kinds["finished"] == 1 and kinds["stopped"] == 0
    assert 1 <= kinds["limit_changed"] <= rejected  # a cut is logged once, not per rejection
    assert logged[0]["event"] == "started"
    assert logged[-1]["event"] == "finished"
    last = logged[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert last["run_id"] == summary["run_id"]
    assert last["rows"] == {"ok": 30, "failed": 0, "skipped": 0}
    assert last["requests"] == summary["requests"]
    assert last["cost_usd"] == summary["cost_usd"]


def test_a_stopped_run_logs_one_stop_and_one_end_and_nothing_but_json(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(12))
    with ZaiServer(fatal_code="1113") as srv:
        args = ("-i", str(inp), "-o", str(out), "-c", "3", "--log-format", "json")
        proc = run_against(srv, *args, expect=3)
        logged = run_events(proc.stderr, out)
        kinds = Counter(e["event"] for e in logged)
        assert kinds["stopped"] == kinds["finished"] == kinds["started"] == 1
        stop = next(e for e in logged if e["event"] == "stopped")
        assert stop["level"] == "warning" and "1113" in stop["message"]
        # --quiet: only the error, as one event
        quiet = run_against(srv, *args, "-q", expect=3)
    (error,) = events(quiet.stderr)
    assert error["event"] == "error" and "1113" in error["message"]
    # Without the run (a missing input): the error is an event too.
    missing = tmp_path / "missing.jsonl"
    with ZaiServer() as srv:
        proc = run_against(
            srv, "-i", str(missing), "-o", str(out), "--log-format", "json", expect=2
        )
    (error,) = events(proc.stderr)
    assert error["event"] == "error" and "missing.jsonl" in error["message"]
