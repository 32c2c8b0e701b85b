"""Failures you can read: `zbatch errors`, status and summary agreeing on "failed",
--retry-failed TYPE, and --quiet's one failure line. Through the installed script, on loopback."""

from __future__ import annotations

import json
import re

from conftest import (
    outcome_ids,
    read_table,
    run_against,
    run_zbatch,
    start_zbatch,
    stop_process,
    wait_for,
    write_jsonl,
)
from zai_server import ZaiServer

ROWS = [
    *({"id": f"ok{i}", "prompt": f"Plain question {i}"} for i in range(6)),
    {"id": "cf1", "prompt": "Blocked one FAIL=1301*"},
    {"id": "cf2", "prompt": "Blocked two FAIL=1301*"},
    {"id": "lab", "prompt": "Pick LABEL=maybe"},
    {"id": "srv", "prompt": "Flaky FAIL=500*"},
]


def failed_run(tmp_path, server: ZaiServer, *extra: str):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out"
    args = [
        "-i",
        str(source),
        "-o",
        str(out),
        "--choices",
        "yes,no,maybe-not",
        "--max-retries",
        "0",
    ]
    # "Plain question" answers are echo:… and fail the label check too; LABEL=maybe as well.
    proc = run_against(server, *args, *extra, expect=1)
    return source, out, proc


def test_errors_groups_failed_rows_by_type_and_code_with_ids_and_messages(tmp_path, server):
    _, out, _ = failed_run(tmp_path, server)
    proc = run_zbatch("errors", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    groups = {(g["error_type"], g["error_code"]): g for g in json.loads(proc.stdout)}
    assert set(groups) == {
        ("invalid_label", None),
        ("content_filter", "1301"),
        ("server_error", "500"),
    }
    assert groups[("invalid_label", None)]["count"] == 7
    assert groups[("content_filter", "1301")]["ids"] == ["cf1", "cf2"]
    assert groups[("server_error", "500")]["retryable"] == 1
    messages = groups[("invalid_label", None)]["messages"]
    assert 1 <= len(messages) <= 3
    assert all("is not one of the choices" in m for m in messages)
    text = run_zbatch("errors", str(out), "--type", "content_filter", "--limit", "1")
    assert text.returncode == 0
    assert text.stdout.splitlines()[:2] == ["content_filter 1301: 2 rows", "  ids: cf1 ..."]


def test_status_and_the_run_summary_agree_on_failed_with_a_breakdown(tmp_path, server):
    _, out, _ = failed_run(tmp_path, server)
    summary = json.loads((out / "summary.json").read_text())
    status = json.loads(run_zbatch("status", str(out), "--json").stdout)
    assert status["failed"] == summary["rows"]["failed"] == 10
    assert (
        status["errors"]
        == summary["errors"]
        == {
            "invalid_label": 7,
            "content_filter": 2,
            "server_error": 1,
        }
    )
    assert status["failed_retryable"] == 1
    assert "10 (invalid_label 7, content_filter 2, server_error 1); 1 retryable" in (
        run_zbatch("status", str(out)).stdout
    )


def test_invalid_label_rows_keep_the_paid_answer_in_the_error_log(tmp_path, server):
    _, out, _ = failed_run(tmp_path, server)
    errors = {r["id"]: r for r in read_table(out / "errors").to_pylist()}
    assert errors["lab"]["answer"] == "maybe"
    assert errors["cf1"]["answer"] is None  # blocked: nothing was answered


def test_retry_failed_with_types_resends_only_those(tmp_path, server):
    _, out, _ = failed_run(tmp_path, server)
    before = server.stats()["requests"]
    server.configure(rates={})
    source = tmp_path / "in.jsonl"
    args = ["-i", str(source), "-o", str(out), "--choices", "yes,no,maybe-not"]
    run_against(server, *args, "--max-retries", "0", "--retry-failed", "content_filter", expect=1)
    sent = server.stats()["bodies_sample"][-3:]
    users = [m["content"] for body in sent for m in body["messages"] if m["role"] == "user"]
    # the two content-filter rows and the retryable server error; no label failure again
    assert server.stats()["requests"] - before == 3
    assert sorted(users) == ["Blocked one FAIL=1301*", "Blocked two FAIL=1301*", "Flaky FAIL=500*"]
    results, errors = outcome_ids(out)
    assert len(results) + len(set(errors)) >= len(ROWS)


def test_an_unknown_retry_failed_type_is_a_usage_error(tmp_path, server):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS[:1])
    proc = run_against(
        server,
        "-i",
        str(source),
        "-o",
        str(tmp_path / "o"),
        "--retry-failed",
        "invalid_lable",
        expect=2,
    )
    assert "unknown error type(s) invalid_lable" in proc.stderr


def test_quiet_still_prints_one_failure_line(tmp_path, server):
    _, out, proc = failed_run(tmp_path, server, "-q")
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1] == (
        "10 rows failed (content_filter 2, invalid_label 7, server_error 1); "
        f"see: zbatch errors {out}"
    )


def test_invalid_json_is_asked_again_and_json_fields_that_do_not_fit_are_counted(tmp_path, server):
    rows = [
        {"id": "good", "prompt": 'Rate JSON={"score": 3, "tag": "a"}'},
        {"id": "nofield", "prompt": 'Rate JSON={"tag": "b"}'},
        {"id": "badtype", "prompt": 'Rate JSON={"score": "high", "tag": "c"}'},
        {"id": "notjson", "prompt": "Rate this plainly"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    args = ["-i", str(source), "-o", str(out), "--response-format", "json_object"]
    job = tmp_path / "j.toml"
    job.write_text('[request]\njson_fields = ["score:int", "tag"]\n')
    run_against(server, str(job), *args, expect=1)
    summary = json.loads((out / "summary.json").read_text())
    assert server.stats()["requests"] == 3 + 2  # the non-JSON answer was asked for twice
    assert summary["errors"] == {"invalid_json": 1}
    assert summary["retries"] == {"invalid_json": 1}
    assert summary["json_fields"] == {"missing": {"score": 1}, "mistyped": {"score": 1}}
    errors = read_table(out / "errors").to_pylist()
    assert errors[0]["answer"].startswith("echo:")  # the paid answer is kept


def test_log_lines_off_a_terminal_show_dollars_spent(tmp_path, server):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS[:6])
    out = tmp_path / "out"
    proc = run_against(server, "-i", str(source), "-o", str(out), "--log-every", "0.05")
    lines = [line for line in proc.stderr.splitlines() if " progress " in line]
    assert lines and all(re.search(r", \$\d+\.\d{4}, concurrency", line) for line in lines)


def test_status_during_a_run_says_a_run_is_active_and_who_holds_it(tmp_path):
    # Two rows are answered at once; every other request hangs (slow_seconds) and the journal
    # is not committed to a part (part_seconds 30 s): the run holds exactly the state the
    # test reads, however slowly the status subprocesses start on a loaded machine.
    rows = [{"id": f"r{i}", "prompt": f"Quick question {i}"} for i in range(2)]
    rows += [{"id": f"s{i}", "prompt": f"Stuck question {i} FAIL=slow*"} for i in range(8)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with ZaiServer(slow_seconds=3600) as slow:
        args = ["-i", str(source), "-o", str(out), "-c", "2", "--no-hedge", "--timeout", "3000"]
        proc = start_zbatch("run", *args, "--grace", "0.5", "--base-url", slow.base_url)
        try:
            wait_for(lambda: slow.stats()["requests"] >= 4, timeout=120)
            status = run_zbatch("status", str(out))
            assert status.returncode == 0
            assert re.search(rf"^running now +pid {proc.pid} on ", status.stdout, re.MULTILINE)

            def figures() -> dict:
                return json.loads(run_zbatch("status", str(out), "--json").stdout)

            # The two answers received but not yet in a part are counted (once the journal's
            # group commit has them: the state holds, so a slow poll cannot miss it).
            wait_for(lambda: figures()["uncommitted"] >= 2, timeout=120, interval=0.2)
            held = figures()
            assert held["uncommitted"] == 2 and held["done"] == 0
            assert held["active"] and str(proc.pid) in held["active"][0]
            assert (out / "results").is_dir() and not list((out / "results").iterdir())
        finally:
            stop_process(proc)
    after = json.loads(run_zbatch("status", str(out), "--json").stdout)
    assert after["active"] == [] and after["uncommitted"] == 0
    assert after["done"] == 2  # what was journaled is committed by the stop


def test_gold_labels_give_agreement_and_a_confusion_table_in_summary_and_status(tmp_path, server):
    rows = [
        {"id": "a", "prompt": "Review LABEL=positive", "ref": "Positive"},
        {"id": "b", "prompt": "Review LABEL=negative", "ref": "positive"},
        {"id": "c", "prompt": "Review LABEL=negative", "ref": "negative"},
        {"id": "d", "prompt": "Review LABEL=neutral"},  # no reference label: not counted
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    job = tmp_path / "j.toml"
    job.write_text('[labels]\nchoices = ["positive", "negative", "neutral"]\ngold_column = "ref"\n')
    proc = run_against(server, str(job), "-i", str(source), "-o", str(out))
    gold = json.loads((out / "summary.json").read_text())["gold"]
    expected = {
        "rows": 3,
        "agreed": 2,
        "accuracy": 0.6667,
        "confusion": {"negative": {"negative": 1}, "positive": {"negative": 1, "positive": 1}},
    }
    assert gold == expected
    assert "gold agreement           66.7% (2 of 3 rows with a reference label)" in proc.stdout
    status = json.loads(run_zbatch("status", str(out), "--json").stdout)
    assert status["gold"] == expected
