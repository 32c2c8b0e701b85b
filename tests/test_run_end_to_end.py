"""zbatch run, end to end: the installed console script against the loopback Z.AI server.

Every test runs ``zbatch`` as a subprocess with ``--base-url`` pointing at
``tests/zai_server.py`` and judges the output directory the way a user would: each result row
holds the answer to its own prompt, each input id ends exactly once in results (or in the error
log), and the server's own counters say what was really sent.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    SPEC_ERROR_COLUMNS,
    SPEC_RESULT_COLUMNS,
    TEST_KEY,
    fast_job,
    input_and_outdir,
    outcome_ids,
    prompt_rows,
    read_export,
    read_table,
    run_against,
    run_zbatch,
    write_jsonl,
    zbatch_env,
)
from helpers import assert_answers, results_by_id, summary, user
from zai_server import ZaiServer, answer_for

REPO = Path(__file__).resolve().parent.parent
OPENAPI_COPIES = (
    Path(__file__).resolve().parent / "data" / "zai-openapi.json",
    Path("/work/shared/reference/zai-openapi.json"),
)


# --------------------------------------------------------------------------- helpers


def table_rows(folder: Path) -> list[dict[str, Any]]:
    return read_table(folder).to_pylist()


def bodies_sent(srv: ZaiServer, requests: int) -> list[dict[str, Any]]:
    """The bodies ``srv`` received (it keeps the first 50), checked to be ``requests`` many."""
    bodies: list[dict[str, Any]] = srv.stats()["bodies_sample"]
    assert len(bodies) == requests
    return bodies


def sent_user_texts(srv: ZaiServer) -> list[str]:
    """The last user message of every request body the server kept (the first 50)."""
    texts = []
    for body in srv.stats()["bodies_sample"]:
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        texts.append(users[-1])
    return texts


def column_types(table: pa.Table) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in table.schema]


# --------------------------------------------------------------------------- a full run


def test_full_run_answers_every_row_once_with_the_spec_schema(
    server: ZaiServer, tmp_path: Path
) -> None:
    """300 rows: exit 0, the documented OUTDIR layout, each id once with its own prompt's answer,
    the exact result schema, and job.json / summary.json figures that match what the server saw.
    """
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)

    run_against(server, "-i", str(inp), "-o", str(out))

    for name in ("job.json", "summary.json", "run.log"):
        assert (out / name).is_file(), name
    for name in ("results", "errors"):
        assert (out / name).is_dir(), name
    assert list((out / "results").glob("part-*.parquet"))
    assert not list((out / "errors").glob("*.parquet")), "a clean run logs no error rows"

    by_id = assert_answers(out, {r["id"]: r["prompt"] for r in rows})
    table = read_table(out / "results")
    assert column_types(table) == SPEC_RESULT_COLUMNS
    for row in by_id.values():
        assert row["finish_reason"] == "stop"
        assert row["model"] == "glm-4.6"
        assert row["attempts"] == 1
        assert row["reasoning_content"] is None
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert row["request_id"]
        assert row["latency_ms"] >= 0
        assert row["completed_at"] is not None

    stats = server.stats()
    assert stats["requests"] == 300
    assert sorted(stats["answered_prompts"]) == sorted(r["prompt"] for r in rows)

    job = json.loads((out / "job.json").read_text(encoding="utf-8"))
    assert isinstance(job["fingerprint"], str) and job["fingerprint"]
    settings = job["settings"]
    assert settings["input_path"] == str(inp)
    assert settings["output_dir"] == str(out)
    assert settings["base_url"] == server.base_url
    assert settings["concurrency"] == 16
    assert settings["api_key_env"] == "ZAI_API_KEY"  # the name of the variable, never the key

    figures = summary(out)
    assert figures["exit_code"] == 0
    assert figures["outcome"] == "finished"
    assert figures["rows"]["ok"] == 300
    assert figures["rows"]["failed"] == 0
    assert figures["rows"]["pending"] == 0
    assert figures["requests"] == stats["requests"]
    assert figures["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in by_id.values())
    assert figures["tokens"]["completion"] == sum(r["completion_tokens"] for r in by_id.values())

    # No key anywhere, and run.log carries events, not prompt text.
    log_text = (out / "run.log").read_text(encoding="utf-8")
    assert "exit 0" in log_text
    assert rows[7]["prompt"] not in log_text
    for path in out.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- input shapes


def test_batch_format_lines_send_each_body_under_its_custom_id(
    server: ZaiServer, tmp_path: Path
) -> None:
    """Batch-format lines {custom_id, body}: the body is sent (stream dropped, job settings only
    filling gaps) and results are keyed by custom_id."""
    lines = []
    for i in range(20):
        messages = [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Batch question {i}"},
        ]
        body: dict[str, Any] = {"model": "glm-4.6", "messages": messages, "max_tokens": 16}
        if i == 0:
            body["stream"] = True
        lines.append(
            {"custom_id": f"req-{i}", "method": "POST", "url": "/v4/chat/completions", "body": body}
        )
    inp = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "out"

    run_against(server, "-i", str(inp), "-o", str(out), "--temperature", "0.5")

    assert_answers(out, {f"req-{i}": f"Batch question {i}" for i in range(20)})
    for sent in bodies_sent(server, 20):
        assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert sent["max_tokens"] == 16  # the body's own value
        assert sent["temperature"] == 0.5  # filled in from the job: the body lacks it
        assert "stream" not in sent
        assert "custom_id" not in sent and "url" not in sent


def test_messages_column_sends_each_rows_conversation(server: ZaiServer, tmp_path: Path) -> None:
    """--messages-column: the row's list of messages is the conversation, --system first."""
    rows = [
        {
            "id": f"chat{i}",
            "messages": [
                {"role": "user", "content": f"Hi {i}"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": f"Follow-up number {i}"},
            ],
        }
        for i in range(15)
    ]
    inp = write_jsonl(tmp_path / "chats.jsonl", rows)
    out = tmp_path / "out"

    run_against(
        server,
        "-i",
        str(inp),
        "-o",
        str(out),
        "--messages-column",
        "messages",
        "--system",
        "Be kind.",
    )

    assert_answers(out, {r["id"]: f"Follow-up number {r['id'][4:]}" for r in rows})
    for sent in server.stats()["bodies_sample"]:
        assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]


def test_template_renders_row_columns_after_the_system_message(
    server: ZaiServer, tmp_path: Path
) -> None:
    """--template over the row's columns with --system: the server sees the system message first
    and the rendered template as the user message; keep_columns are copied into the results."""
    rows = [
        {"id": f"r{i}", "product": f"Widget {i}", "text": f"works fine {i}", "stars": i % 5}
        for i in range(25)
    ]
    inp = write_jsonl(tmp_path / "reviews.jsonl", rows)
    out = tmp_path / "out"
    template = "Product: {product}\nReview: {text}"

    run_against(
        server,
        "-i",
        str(inp),
        "-o",
        str(out),
        "--template",
        template,
        "--system",
        "One word.",
        "--keep-columns",
        "product,stars",
    )

    rendered = {r["id"]: template.format(**r) for r in rows}
    by_id = assert_answers(out, rendered)
    for sent in server.stats()["bodies_sample"]:
        assert sent["messages"][0] == {"role": "system", "content": "One word."}
        assert sent["messages"][1]["role"] == "user"
        assert sent["messages"][1]["content"] in rendered.values()
    table = read_table(out / "results")
    assert table.column_names == [name for name, _ in SPEC_RESULT_COLUMNS] + ["product", "stars"]
    assert table.schema.field("stars").type == pa.int64()
    for row in rows:
        assert by_id[row["id"]]["product"] == row["product"]
        assert by_id[row["id"]]["stars"] == row["stars"]


def test_prompt_column_sends_one_user_message(server: ZaiServer, tmp_path: Path) -> None:
    """--prompt-column: the column's text is the single user message."""
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?"} for i in range(12)]
    inp = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"

    run_against(server, "-i", str(inp), "-o", str(out), "--prompt-column", "question")

    assert_answers(out, {r["id"]: r["question"] for r in rows})
    for sent in server.stats()["bodies_sample"]:
        assert sent["messages"] == user(sent["messages"][0]["content"])


def test_gzip_parquet_and_folder_inputs(server: ZaiServer, tmp_path: Path) -> None:
    """.jsonl.gz, .parquet and a folder mixing .jsonl/.jsonl.gz/.parquet files are all read,
    every row of every file ending once in results with its own answer."""
    gz_rows = prompt_rows(30, prefix="gz")
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in gz_rows)
    run_against(server, "-i", str(gz), "-o", str(tmp_path / "out_gz"))
    assert_answers(tmp_path / "out_gz", {r["id"]: r["prompt"] for r in gz_rows})

    pq_rows = prompt_rows(30, prefix="pq")
    pq_path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(pq_rows), pq_path)
    run_against(server, "-i", str(pq_path), "-o", str(tmp_path / "out_pq"))
    assert_answers(tmp_path / "out_pq", {r["id"]: r["prompt"] for r in pq_rows})

    folder = tmp_path / "folder"
    parts = [prompt_rows(10, prefix=p) for p in ("fa", "fb", "fc")]
    write_jsonl(folder / "a.jsonl", parts[0])
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in parts[1])
    pq.write_table(pa.Table.from_pylist(parts[2]), folder / "c.parquet")
    (folder / "notes.txt").write_text("not an input file\n", encoding="utf-8")
    run_against(server, "-i", str(folder), "-o", str(tmp_path / "out_dir"))
    every = [r for part in parts for r in part]
    assert_answers(tmp_path / "out_dir", {r["id"]: r["prompt"] for r in every})
    assert server.stats()["requests"] == 30 + 30 + 30


# --------------------------------------------------------------------------- request bodies


def openapi_validator() -> Any:
    """A jsonschema validator for ChatCompletionTextRequest, refs resolved in the whole doc."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    path = next((p for p in OPENAPI_COPIES if p.is_file()), None)
    if path is None:
        pytest.skip("no copy of zai-openapi.json (tests/data/ or /work/shared/reference/)")
    document = json.loads(path.read_text(encoding="utf-8"))
    uri = "https://docs.z.ai/openapi.json"
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource(uri, resource)
    schema = {"$ref": f"{uri}#/components/schemas/ChatCompletionTextRequest"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_request_bodies_validate_against_the_openapi_schema(
    server: ZaiServer, tmp_path: Path
) -> None:
    """Every body zbatch sent, with temperature/top_p/max_tokens/thinking/response_format set, is
    a valid ChatCompletionTextRequest of Z.AI's OpenAPI document (and so are batch-line bodies);
    the validator is shown to reject a bad body, so the check has teeth."""
    validator = openapi_validator()
    bad = {"model": "gpt-x", "messages": user("hi"), "temperature": 3}
    assert not validator.is_valid(bad)
    assert not validator.is_valid({"model": "glm-4.6", "messages": user("hi"), "thinking": True})

    rows = [{"id": f"j{i}", "text": f'JSON={{"n": {i}, "tag": "t{i}"}}'} for i in range(20)]
    inp, out = input_and_outdir(tmp_path, rows)
    run_against(
        server,
        "-i",
        str(inp),
        "-o",
        str(out),
        "--model",
        "glm-4.6",
        "--template",
        "{text}",
        "--system",
        "Reply with JSON.",
        "--temperature",
        "0.3",
        "--top-p",
        "0.9",
        "--max-tokens",
        "64",
        "--thinking",
        "--response-format",
        "json_object",
    )

    for body in bodies_sent(server, 20):
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (body, errors)
        assert body["model"] == "glm-4.6"
        assert body["temperature"] == 0.3
        assert body["top_p"] == 0.9
        assert body["max_tokens"] == 64
        assert body["thinking"] == {"type": "enabled"}
        assert body["response_format"] == {"type": "json_object"}
    by_id = results_by_id(out)
    assert len(by_id) == 20
    for i in range(20):
        row = by_id[f"j{i}"]
        assert json.loads(row["json"]) == {"n": i, "tag": f"t{i}"}
        assert row["reasoning_content"] == "thought about " + row["content"]

    server.reset_stats()
    lines = [
        {
            "custom_id": f"b{i}",
            "body": {
                "model": "glm-4.6",
                "messages": user(f"B {i}"),
                "stream": False,
                "do_sample": False,
            },
        }
        for i in range(10)
    ]
    batch = write_jsonl(tmp_path / "batch.jsonl", lines)
    run_against(
        server,
        "-i",
        str(batch),
        "-o",
        str(tmp_path / "out_b"),
        "--no-thinking",
        "--max-tokens",
        "8",
    )
    for body in bodies_sent(server, 10):
        assert not [e.message for e in validator.iter_errors(body)], body
        assert body["thinking"] == {"type": "disabled"}


# --------------------------------------------------------------------------- resume


def stop_for_balance(
    server: ZaiServer,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    answers: int,
    *,
    concurrency: int,
    latency: float,
) -> tuple[Path, tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Run ``rows`` against a server whose balance runs out (1113) after ``answers`` answers:
    the OUTDIR, the run's arguments (the same command resumes it) and the stopped run (exit 3)."""
    inp, out = input_and_outdir(tmp_path, rows)
    args = ("-i", str(inp), "-o", str(out), "--concurrency", str(concurrency))
    server.configure(fatal_after=answers, latency=latency)
    return out, args, run_against(server, *args, expect=3)


def test_resume_after_a_stop_sends_only_the_remaining_rows(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A run stopped part-way (no balance after 60 answers) exits 3 telling the user to top up and
    run the same command; that command sends only the rows not yet answered, every id ends once
    in results, and running the finished job again sends nothing and exits 0."""
    rows = prompt_rows(200)
    prompts = {r["id"]: r["prompt"] for r in rows}
    out, args, first = stop_for_balance(server, tmp_path, rows, 60, concurrency=8, latency=0.005)
    assert "top up" in first.stderr
    assert "run the same command" in first.stderr
    done_first, _ = outcome_ids(out)
    assert len(done_first) == len(set(done_first))
    # Nothing already paid for is lost: every answer the server gave is committed.
    assert len(done_first) == server.stats()["successes"] == 60
    errors = table_rows(out / "errors")
    assert errors and all(e["retryable"] for e in errors)
    assert {e["error_code"] for e in errors} == {"1113"}
    assert summary(out)["exit_code"] == 3

    server.configure(fatal_code=None, fatal_after=None)
    server.reset_stats()
    run_against(server, *args)
    stats = server.stats()
    remaining = sorted(prompts[i] for i in prompts if i not in set(done_first))
    assert stats["requests"] == 200 - 60
    assert sorted(stats["answered_prompts"]) == remaining
    assert_answers(out, prompts)
    assert summary(out)["rows"]["skipped_already_done"] == 60

    server.reset_stats()
    again = run_against(server, *args)
    assert server.stats()["requests"] == 0
    assert summary(out)["rows"]["skipped_already_done"] == 200
    assert "Error" not in again.stderr
    assert_answers(out, prompts)


def test_resume_over_parquet_reads_done_batches_by_id_and_still_logs_a_new_repeat(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A resume skips Parquet batches whose ids are all done without reading their rows, yet a
    repeated id inside such a batch (added since the first run) still goes to the error log,
    once: every input row ends exactly once in results or errors."""
    rows = prompt_rows(4200)  # more than one 4,096-row Parquet batch
    prompts = {r["id"]: r["prompt"] for r in rows}
    inp = tmp_path / "in.parquet"
    out = tmp_path / "out"
    args = ("-i", str(inp), "-o", str(out), "--concurrency", "32")
    pq.write_table(pa.Table.from_pylist(rows), inp)
    run_against(server, *args)
    assert_answers(out, prompts)

    repeat = {"id": "row00010", "prompt": "the same id again"}
    pq.write_table(pa.Table.from_pylist([*rows[:4096], repeat, *rows[4096:]]), inp)
    server.reset_stats()
    run_against(server, *args, expect=1)
    assert server.stats()["requests"] == 0
    [error] = table_rows(out / "errors")
    assert (error["id"], error["error_type"]) == ("row00010", "duplicate_id")
    assert "in.parquet row 4096 repeats id 'row00010'" in error["message"]
    assert summary(out)["rows"]["skipped_already_done"] == 4200

    run_against(server, *args)  # logged once: the next run has nothing to add
    assert server.stats()["requests"] == 0
    assert len(table_rows(out / "errors")) == 1
    assert_answers(out, prompts)


def test_no_balance_1113_stops_at_once_even_with_many_in_flight(
    server: ZaiServer, tmp_path: Path
) -> None:
    """1113 (no balance) with concurrency 16 and latency: exit 3 within seconds, no request starts
    after the first 1113 beyond the ones already in flight, every answer committed; the same
    command then completes the job with no id twice."""
    rows = prompt_rows(400)
    prompts = {r["id"]: r["prompt"] for r in rows}
    out, args, first = stop_for_balance(server, tmp_path, rows, 100, concurrency=16, latency=0.05)
    assert "1113" in first.stderr and "top up" in first.stderr
    stats = server.stats()
    assert stats["successes"] == 100
    assert stats["requests"] <= stats["successes"] + 16 + 2, stats["requests"]
    assert stats["errors_by_code"].get("1113", 0) <= 16 + 2
    # The bounds above are by count, not time: after the first 1113 only requests already in
    # flight arrive (a client that kept going would send the other 300).
    done_first, _ = outcome_ids(out)
    assert len(done_first) == len(set(done_first)) == 100

    server.configure(fatal_code=None, fatal_after=None, latency=0.0)
    server.reset_stats()
    run_against(server, *args)
    assert server.stats()["requests"] == 300
    assert_answers(out, prompts)


# --------------------------------------------------------------------------- row failures


def test_content_filter_rows_are_logged_once_and_never_retried(
    server: ZaiServer, tmp_path: Path
) -> None:
    """1301 and finish_reason "sensitive" fail only their row: one request each, one error row
    (content_filter, retryable false), exit 1; a re-run does not send them again."""
    rows = prompt_rows(10)
    rows.append({"id": "cf-1301", "prompt": "Something risky FAIL=1301*"})
    rows.append({"id": "cf-sens", "prompt": "Something else FAIL=sensitive*"})
    inp, out = input_and_outdir(tmp_path, rows)
    job = fast_job(tmp_path)

    run_against(server, job, "-i", str(inp), "-o", str(out), expect=1)

    sent = sent_user_texts(server)
    assert sent.count("Something risky FAIL=1301*") == 1
    assert sent.count("Something else FAIL=sensitive*") == 1
    assert server.stats()["errors_by_code"] == {"1301": 1, "sensitive": 1}
    errors = read_table(out / "errors")
    assert column_types(errors) == SPEC_ERROR_COLUMNS
    by_id = {e["id"]: e for e in errors.to_pylist()}
    assert sorted(errors.column("id").to_pylist()) == ["cf-1301", "cf-sens"]
    for error in by_id.values():
        assert error["error_type"] == "content_filter"
        assert error["retryable"] is False
        assert error["attempts"] == 1
    assert by_id["cf-1301"]["error_code"] == "1301"
    assert by_id["cf-1301"]["status_code"] == 400
    assert_answers(out, {r["id"]: r["prompt"] for r in rows[:10]})
    assert summary(out)["errors"] == {"content_filter": 2}

    server.reset_stats()
    run_against(server, job, "-i", str(inp), "-o", str(out))
    assert server.stats()["requests"] == 0
    assert read_table(out / "errors").num_rows == 2


def test_retryable_faults_are_retried_and_exhausted_rows_resent_next_run(
    server: ZaiServer, tmp_path: Path
) -> None:
    """1302, 500, 503, a reset connection and a broken JSON 200 are retried: the row ends in
    results with attempts == faults + 1. A row that runs out of --max-retries is logged with
    retryable true, and the next run sends it again (and only it)."""
    faults = {
        "f-1302": "1302",
        "f-500": "500",
        "f-503": "503",
        "f-reset": "reset",
        "f-badjson": "badjson",
        "f-all": "1302,500,503,reset,badjson",
    }
    rows = prompt_rows(10)
    rows += [{"id": k, "prompt": f"Question {k} FAIL={v}"} for k, v in faults.items()]
    rows.append({"id": "f-exhaust", "prompt": "Question exhaust FAIL=" + ",".join(["500"] * 6)})
    prompts = {r["id"]: r["prompt"] for r in rows}
    inp, out = input_and_outdir(tmp_path, rows)
    args = (fast_job(tmp_path), "-i", str(inp), "-o", str(out), "--max-retries", "5")

    run_against(server, *args, expect=1)

    by_id = results_by_id(out)
    assert sorted(by_id) == sorted(i for i in prompts if i != "f-exhaust")
    for row_id, row in by_id.items():
        expected = len(faults[row_id].split(",")) + 1 if row_id in faults else 1
        assert row["attempts"] == expected, row_id
        assert row["content"] == answer_for(user(prompts[row_id])), row_id
    errors = table_rows(out / "errors")
    assert [e["id"] for e in errors] == ["f-exhaust"]
    assert errors[0]["retryable"] is True
    assert errors[0]["error_type"] == "server_error"
    assert errors[0]["attempts"] == 6
    assert sent_user_texts(server).count(prompts["f-exhaust"]) == 6

    # The next run sends that row again, and only it; the server's seventh answer succeeds.
    before = server.stats()["requests"]
    run_against(server, *args)
    assert server.stats()["requests"] - before == 1
    assert sent_user_texts(server).count(prompts["f-exhaust"]) == 7
    after = assert_answers(out, prompts)
    assert after["f-exhaust"]["attempts"] == 1
    assert {k: v for k, v in after.items() if k != "f-exhaust"} == by_id


def test_unusable_rows_become_error_rows_and_are_never_sent(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A row without an id, a repeated id, a line that is not JSON and a row whose template field
    is null each give one error row (missing_id / duplicate_id / invalid_input / template_error)
    naming the place; none of them is sent, and a re-run neither sends nor re-logs them."""
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok1", "text": "alpha"}),
                json.dumps({"text": "no id here"}),
                json.dumps({"id": "ok2", "text": "beta"}),
                json.dumps({"id": "ok2", "text": "beta again"}),
                '{"id": "broken", "text": ',
                json.dumps({"id": "nul", "text": None}),
                json.dumps({"id": "ok3", "text": "gamma"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ("-i", str(inp), "-o", str(out), "--template", "Say: {text}")

    run_against(server, *args, expect=1)

    assert sorted(sent_user_texts(server)) == ["Say: alpha", "Say: beta", "Say: gamma"]
    assert_answers(out, {"ok1": "Say: alpha", "ok2": "Say: beta", "ok3": "Say: gamma"})
    errors = {(e["id"], e["error_type"]): e for e in table_rows(out / "errors")}
    assert sorted(errors) == [
        ("?in.jsonl line 2", "missing_id"),
        ("?in.jsonl line 5", "invalid_input"),
        ("nul", "template_error"),
        ("ok2", "duplicate_id"),
    ]
    assert all(e["retryable"] is False for e in errors.values())
    assert "line 4" in errors[("ok2", "duplicate_id")]["message"]
    assert "text" in errors[("nul", "template_error")]["message"]
    assert summary(out)["rows"]["failed"] == 4

    server.reset_stats()
    run_against(server, *args)
    assert server.stats()["requests"] == 0
    assert read_table(out / "errors").num_rows == 4


def test_template_field_no_row_has_stops_before_sending(server: ZaiServer, tmp_path: Path) -> None:
    """A template field that the input lacks altogether: exit 2 naming the field, nothing sent."""
    inp, out = input_and_outdir(tmp_path, [{"id": f"r{i}", "text": "x"} for i in range(5)])

    proc = run_against(
        server,
        "-i",
        str(inp),
        "-o",
        str(out),
        "--template",
        "Translate {text} into {language}",
        expect=2,
    )

    assert "'language'" in proc.stderr
    assert "nothing was sent" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert server.stats()["requests"] == 0
    assert outcome_ids(out) == ([], [])


# --------------------------------------------------------------------------- generations


def test_changed_template_is_refused_unless_forced_into_a_new_generation(
    server: ZaiServer, tmp_path: Path
) -> None:
    """Changing the template against an existing OUTDIR exits 2 pointing at --force and sends
    nothing; with --force the old outputs move under OUTDIR/generations/ and the new template's
    answers fill results/."""
    rows = [{"id": f"r{i}", "text": f"item {i}"} for i in range(10)]
    inp, out = input_and_outdir(tmp_path, rows)
    run_against(server, "-i", str(inp), "-o", str(out), "--template", "Say: {text}")
    old_parts = sorted(p.name for p in (out / "results").glob("*.parquet"))

    server.reset_stats()
    refused = run_against(
        server, "-i", str(inp), "-o", str(out), "--template", "Shout: {text}", expect=2
    )
    assert "--force" in refused.stderr
    assert "template" in refused.stderr
    assert server.stats()["requests"] == 0
    assert_answers(out, {r["id"]: f"Say: {r['text']}" for r in rows})

    forced = run_against(
        server, "-i", str(inp), "-o", str(out), "--template", "Shout: {text}", "--force"
    )
    assert "generations" in forced.stdout + forced.stderr
    assert server.stats()["requests"] == 10
    assert_answers(out, {r["id"]: f"Shout: {r['text']}" for r in rows})
    generations = list((out / "generations").iterdir())
    assert len(generations) == 1
    archived = generations[0]
    assert (archived / "job.json").is_file()
    assert sorted(p.name for p in (archived / "results").glob("*.parquet")) == old_parts
    assert_answers(archived, {r["id"]: f"Say: {r['text']}" for r in rows})
    job = json.loads((out / "job.json").read_text(encoding="utf-8"))
    assert job["settings"]["template"] == "Shout: {text}"


# --------------------------------------------------------------------------- status / export


def test_status_and_export_report_the_final_outcome_of_every_input_id(
    server: ZaiServer, tmp_path: Path
) -> None:
    """`zbatch status --json` counts done / failed / retryable / pending and tokens as the parts
    hold them; `zbatch export --with-input` writes one row per input id (ok, failed,
    failed_retryable or pending) with the input's columns, in .parquet, .jsonl and .csv."""
    rows = [
        {"id": f"s{i}", "prompt": f"Status question {i}", "topic": f"t{i % 3}"} for i in range(8)
    ]
    rows.append({"id": "cf", "prompt": "Blocked FAIL=1301*", "topic": "t9"})
    rows.append({"id": "tr", "prompt": "Flaky FAIL=500*", "topic": "t9"})
    inp, out = input_and_outdir(tmp_path, rows)
    run_against(server, "-i", str(inp), "-o", str(out), "--max-retries", "0", expect=1)
    new_rows = [{"id": f"n{i}", "prompt": f"New question {i}", "topic": "new"} for i in range(3)]
    write_jsonl(inp, rows + new_rows)  # the input grew since the run: 3 pending rows
    all_rows = rows + new_rows
    results = table_rows(out / "results")

    proc = run_zbatch("status", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["input_rows"] == 13
    assert report["done"] == 8
    assert report["failed"] == 2  # as the run's summary counts them
    assert report["failed_retryable"] == 1  # of those, the one the next run sends again
    assert report["errors"] == {"content_filter": 1, "server_error": 1}
    assert report["pending"] == 13 - 8 - 2
    assert report["tokens"]["prompt"] == sum(r["prompt_tokens"] for r in results)
    assert report["tokens"]["completion"] == sum(r["completion_tokens"] for r in results)
    assert report["last_run"]["exit_code"] == 1
    text = run_zbatch("status", str(out))
    assert text.returncode == 0 and "pending" in text.stdout

    expected_status = {r["id"]: "ok" for r in rows[:8]}
    expected_status.update({"cf": "failed", "tr": "failed_retryable"})
    expected_status.update({r["id"]: "pending" for r in new_rows})
    for suffix in ("parquet", "jsonl", "csv"):
        target = tmp_path / f"x.{suffix}"
        proc = run_zbatch("export", str(out), "-o", str(target), "--with-input")
        assert proc.returncode == 0, proc.stderr
        exported = read_export(target)
        assert [r["id"] for r in exported] == [r["id"] for r in all_rows], suffix
        for source, row in zip(all_rows, exported, strict=True):
            assert row["status"] == expected_status[source["id"]], (suffix, source["id"])
            assert row["prompt"] == source["prompt"], suffix
            assert row["topic"] == source["topic"], suffix
            if row["status"] == "ok":
                assert row["content"] == answer_for(user(source["prompt"])), suffix
        failed = next(r for r in exported if r["id"] == "cf")
        assert failed["error_type"] == "content_filter", suffix

    plain = tmp_path / "plain.parquet"
    assert run_zbatch("export", str(out), "-o", str(plain)).returncode == 0
    ids = pq.read_table(plain).column("id").to_pylist()
    assert sorted(ids) == sorted(r["id"] for r in rows)


# --------------------------------------------------------------------------- entry points


def test_python_dash_m_zbatch_shows_help() -> None:
    """`python -m zbatch --help` works like the console script and lists the commands."""
    proc = subprocess.run(
        [sys.executable, "-m", "zbatch", "--help"],
        env=zbatch_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "status", "export", "compact", "validate"):
        assert command in proc.stdout


def job_files() -> list[Any]:
    found = sorted((REPO / "jobs").glob("*.toml"))
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(reason="jobs/ holds no job files yet"))]
    return [pytest.param(path, id=path.stem) for path in found]


@pytest.mark.parametrize("job_file", job_files())
def test_every_shipped_job_rehearses_offline(job_file: Path | None, tmp_path: Path) -> None:
    """`zbatch run jobs/<job>.toml --simulate -o <tmp>` exits 0 for every shipped job file, with
    every input row ending in results (the rpm cap, if any, is lifted to keep the test short)."""
    assert job_file is not None
    settings = tomllib.loads(job_file.read_text(encoding="utf-8"))
    extra = ["--rpm", "600000"] if "rpm" in settings.get("limits", {}) else []
    out = tmp_path / "out"
    proc = run_zbatch("run", str(job_file), "--simulate", "-o", str(out), *extra, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.simulated"
    figures = summary(out)
    assert figures["rows"]["pending"] == 0
    assert figures["rows"]["failed"] == 0
    results, _ = outcome_ids(out)
    assert len(results) == len(set(results)) == figures["rows"]["ok"] > 0
