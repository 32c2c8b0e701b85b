"""Hostile answers through a whole run (issue 11): the installed zbatch against the loopback
server's hostile faults. Each answer class either lands as a storable row or is classified,
and never costs the answers around it. test_wire.py covers each class with more triggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import input_and_outdir, outcome_ids, read_table, run_against
from helpers import summary
from zai_server import ZaiServer, answer_for


def rows_with(fault: str, count: int, *, prefix: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i:03d}", "prompt": f"{prefix} {i} FAIL={fault}"} for i in range(count)
    ]


def test_an_error_object_sent_with_status_200_stops_the_run_like_its_code(
    server: ZaiServer, tmp_path: Path
) -> None:
    """1113 ("no balance") inside a 200 stops the run at once (exit 3), as a 429 would;
    retried as a bad answer it cost 180 requests for 20 rows."""
    rows = rows_with("error200*", 20, prefix="e")
    inp, out = input_and_outdir(tmp_path, rows)
    proc = run_against(server, "-i", str(inp), "-o", str(out), "--concurrency", "4", expect=3)
    assert "top up" in proc.stderr
    assert server.stats()["requests"] <= 4 + 2
    results, errors = outcome_ids(out)
    assert results == []
    logged = read_table(out / "errors").to_pylist()
    assert {(r["error_code"], r["status_code"], r["retryable"]) for r in logged} == {
        ("1113", 200, True)
    }
    assert len(errors) == len(set(errors))


def test_answers_with_fields_of_the_wrong_types_are_stored_and_their_usage_counted(
    server: ZaiServer, tmp_path: Path
) -> None:
    """An integer request_id, a numeric model and a string token count: every answer is kept
    (with a text request_id and a null token count), and summary.json counts the bad usage."""
    odd = rows_with("oddtypes*", 12, prefix="odd")
    plain = [{"id": f"ok{i}", "prompt": f"plain question {i}"} for i in range(8)]
    inp, out = input_and_outdir(tmp_path, odd + plain)
    run_against(server, "-i", str(inp), "-o", str(out), "--part-rows", "5")
    stored = {r["id"]: r for r in read_table(out / "results").to_pylist()}
    assert sorted(stored) == sorted(r["id"] for r in odd + plain)
    for row in odd + plain:
        result = stored[row["id"]]
        assert result["content"] == answer_for([{"role": "user", "content": row["prompt"]}])
        assert isinstance(result["request_id"], str)
    assert all(stored[r["id"]]["prompt_tokens"] is None for r in odd)
    assert all(stored[r["id"]]["model"] == "4.6" for r in odd)
    assert all(stored[r["id"]]["prompt_tokens"] >= 1 for r in plain)
    assert summary(out)["answers_with_malformed_usage"] == 12


def test_an_answer_without_a_message_is_retried_and_never_an_empty_result(
    server: ZaiServer, tmp_path: Path
) -> None:
    once = rows_with("nomessage", 3, prefix="once")  # the second attempt answers
    always = rows_with("nomessage*", 2, prefix="always")
    inp, out = input_and_outdir(tmp_path, once + always)
    quick = ("--max-retries", "2", "--backoff-base", "0.01", "--backoff-cap", "0.05")
    run_against(server, "-i", str(inp), "-o", str(out), *quick, expect=1)
    stored = {r["id"]: r["content"] for r in read_table(out / "results").to_pylist()}
    assert stored == {r["id"]: answer_for([{"role": "user", "content": r["prompt"]}]) for r in once}
    logged = read_table(out / "errors").to_pylist()
    assert sorted(r["id"] for r in logged) == [r["id"] for r in always]
    assert {(r["error_type"], r["attempts"], r["retryable"]) for r in logged} == {
        ("invalid_response", 3, True)
    }


def test_a_huge_retry_after_ends_at_the_rows_deadline(server: ZaiServer, tmp_path: Path) -> None:
    """`Retry-After: 99999999` kept a row waiting for ever; it now waits at most until the
    row's max_attempt_seconds (the run's timeout below is only a hang guard)."""
    rows = [*rows_with("hugeretry*", 2, prefix="wait"), {"id": "fine", "prompt": "plain"}]
    inp, out = input_and_outdir(tmp_path, rows)
    args = ("-i", str(inp), "-o", str(out), "--max-attempt-seconds", "1", "--backoff-cap", "1")
    run_against(server, *args, expect=1, timeout=90)
    results, errors = outcome_ids(out)
    assert results == ["fine"]
    assert sorted(errors) == ["wait000", "wait001"]
    logged = read_table(out / "errors").to_pylist()
    assert {(r["error_code"], r["retryable"]) for r in logged} == {("1302", True)}
