"""The labelling loop's run side: answers checked against a JSON Schema (sent in each
provider's form, repaired, typed columns), the response cache shared by OUTDIRs, and several
answers per row (samples). Against the loopback server, through the installed script and the
public Python API."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import (
    TEST_KEY,
    input_and_outdir,
    outcome_ids,
    read_table,
    run_against,
    run_zbatch,
    start_zbatch,
    write_jsonl,
    zbatch_env,
)
from zai_server import NOT_JSON, ZaiServer, answer_for

import zbatch
from zbatch.schema import answer_fields

TICKET = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["Bug", "Feature", "Question"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "score": {"type": "number"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "owner": {
            "type": "object",
            "properties": {"team": {"type": "string"}, "size": {"type": "integer"}},
        },
    },
    "required": ["kind", "priority"],
}
TICKET_TYPES = {
    "kind": pa.string(),
    "priority": pa.int64(),
    "score": pa.float64(),
    "urgent": pa.bool_(),
    "tags": pa.list_(pa.string()),
    "owner": pa.struct([("team", pa.string()), ("size", pa.int64())]),
}


def ticket(i: int, kind: str = "Bug") -> dict[str, Any]:
    return {
        "kind": kind,
        "priority": 1 + i % 5,
        "score": i / 4,
        "urgent": i % 2 == 0,
        "tags": [f"t{i}", "x"],
        "owner": {"team": f"team{i}", "size": i},
    }


def schema_job(tmp_path: Path, *lines: str) -> Path:
    """A job file whose output.schema is a file beside it (a path relative to the job)."""
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "ticket.json").write_text(json.dumps(TICKET))
    job = tmp_path / "job.toml"
    job.write_text(
        "\n".join(
            [
                "[request]",
                "temperature = 0",
                *lines,
                "[output]",
                'schema = "schemas/ticket.json"',
                "[limits]",
                "backoff_base = 0.02",
            ]
        )
        + "\n"
    )
    return job


SCHEMA_ROWS = [
    *({"id": f"ok{i}", "prompt": f"Ticket {i} JSON={json.dumps(ticket(i))}"} for i in range(5)),
    # "bug" is the enum's "Bug", normalised like a label
    {"id": "lower", "prompt": f"Ticket L JSON={json.dumps(ticket(7, 'bug'))}"},
    # not JSON at first; asked again with the error, it answers right
    {"id": "fixed", "prompt": f"Ticket F WRONG=1 JSON={json.dumps(ticket(8))}"},
    # never JSON: after repair_attempts (1) an invalid_output row keeps the paid answer
    {"id": "never", "prompt": f"Ticket N WRONG=9 JSON={json.dumps(ticket(9))}"},
    # JSON, but priority 7 breaks the schema every time
    {"id": "range", "prompt": 'Ticket R JSON={"kind": "Bug", "priority": 7}'},
]


def check_schema_run(out: Path, server: ZaiServer) -> None:
    results = read_table(out / "results")
    for name, kind in TICKET_TYPES.items():
        assert results.schema.field(name).type == kind, name
    rows = {row["id"]: row for row in results.to_pylist()}
    assert sorted(rows) == ["fixed", "lower", "ok0", "ok1", "ok2", "ok3", "ok4"]
    for i in range(5):  # every row holds its own prompt's answer, typed
        assert {name: rows[f"ok{i}"][name] for name in TICKET_TYPES} == ticket(i)
        assert json.loads(rows[f"ok{i}"]["json"]) == ticket(i)
        assert rows[f"ok{i}"]["cached"] is False
    assert rows["lower"]["kind"] == "Bug"
    assert rows["fixed"]["priority"] == ticket(8)["priority"]
    assert rows["fixed"]["attempts"] == 2
    errors = {row["id"]: row for row in read_table(out / "errors").to_pylist()}
    assert sorted(errors) == ["never", "range"]
    assert errors["never"]["error_type"] == "invalid_output"
    assert errors["never"]["answer"] == NOT_JSON  # the paid answer, kept
    assert "not JSON" in errors["never"]["message"]
    assert errors["range"]["error_type"] == "invalid_output"
    assert "priority" in errors["range"]["message"]
    summary = json.loads((out / "summary.json").read_text())
    # one repair each for fixed, never and range; fixed came right
    assert summary["repairs"] == {"requests": 3, "repaired_rows": 1}
    assert summary["retries"] == {"invalid_output": 3}
    assert summary["errors"] == {"invalid_output": 2}
    assert server.stats()["requests"] == len(SCHEMA_ROWS) + 3


def test_a_schema_goes_to_zai_as_json_mode_plus_the_schema_in_the_system_message(tmp_path, server):
    source, out = input_and_outdir(tmp_path, SCHEMA_ROWS)
    job = schema_job(tmp_path, 'system = "You sort tickets."')
    run_against(server, str(job), "-i", str(source), "-o", str(out), expect=1)
    check_schema_run(out, server)
    bodies = server.stats()["bodies_sample"]
    for body in bodies:
        assert body["response_format"] == {"type": "json_object"}
        system = body["messages"][0]
        assert system["role"] == "system" and system["content"].startswith("You sort tickets.")
        assert json.dumps(TICKET) in system["content"]
    repairs = [b for b in bodies if len(b["messages"]) > 2]
    assert len(repairs) == 3
    for body in repairs:  # the answer, then the error, in the conversation
        assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
        assert "not valid" in body["messages"][3]["content"]


def test_a_schema_goes_to_an_openai_compatible_server_as_json_schema(tmp_path):
    source, out = input_and_outdir(tmp_path, SCHEMA_ROWS)
    job = schema_job(tmp_path)
    with ZaiServer(structured="json_schema") as server:
        args = ["-i", str(source), "-o", str(out), "--provider", "openai"]
        run_against(server, str(job), *args, "--model", "m", expect=1)
        check_schema_run(out, server)
        bodies = server.stats()["bodies_sample"]
    for body in bodies:
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": TICKET, "strict": False},
        }
        assert body["messages"][0]["role"] == "user"  # no schema in a system message


@pytest.mark.parametrize("where", ["job file", "flag"])
def test_schema_form_json_object_sends_the_schema_inside_json_mode(tmp_path, where):
    """llama-cpp-python's server refuses response_format json_schema and takes the schema in
    json_object instead: endpoint.schema_form = "json_object" (or --schema-form) says so."""
    source, out = input_and_outdir(tmp_path, SCHEMA_ROWS)
    in_file = ["[endpoint]", 'schema_form = "json_object"'] if where == "job file" else []
    job = schema_job(tmp_path, 'system = "You sort tickets."', *in_file)
    flag = ["--schema-form", "json_object"] if where == "flag" else []
    with ZaiServer(structured="json_object") as server:
        args = ["-i", str(source), "-o", str(out), "--provider", "openai", *flag]
        run_against(server, str(job), *args, "--model", "m", expect=1)
        check_schema_run(out, server)
        bodies = server.stats()["bodies_sample"]
        assert server.stats()["errors_by_code"] == {}
    assert bodies
    for body in bodies:
        assert body["response_format"] == {"type": "json_object", "schema": TICKET}
        # the system message is the job's own: the schema is not repeated there
        assert body["messages"][0] == {"role": "system", "content": "You sort tickets."}


def test_a_server_refusing_the_schema_form_stops_the_run_naming_the_setting(tmp_path):
    """llama-cpp-python's server answers 500 to response_format json_schema (the openai
    profile's form): refused every time, so not retried, and the first rows' verdict stops the
    run naming endpoint.schema_form; the same command with it set answers every row."""
    rows = [{"id": f"t{i}", "prompt": f"T{i} JSON={json.dumps(ticket(i))}"} for i in range(30)]
    source, out = input_and_outdir(tmp_path, rows)
    job = schema_job(tmp_path)
    args = ["-i", str(source), "-o", str(out), "--provider", "openai", "--model", "m", "-c", "4"]
    with ZaiServer(structured="json_object") as server:
        stopped = run_against(server, str(job), *args, expect=3)
        assert "endpoint.schema_form" in stopped.stderr
        assert "Input should be 'text' or 'json_object'" in stopped.stderr
        refused = server.stats()
        assert refused["successes"] == 0
        assert refused["errors_by_code"]["500"] == refused["requests"] < len(rows)  # no retries
        run_against(server, str(job), *args, "--schema-form", "json_object", expect=0)
    table = read_table(out / "results")
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    for row in table.to_pylist():
        i = int(row["id"][1:])
        assert (row["kind"], row["priority"]) == ("Bug", ticket(i)["priority"])


def test_zai_refuses_json_schema_so_zbatch_never_sends_it(tmp_path, server):
    """The loopback Z.AI answers response_format json_schema with 1214, as Z.AI does: the
    provider profile, not the user, decides the form."""
    source, out = input_and_outdir(tmp_path, SCHEMA_ROWS[:2])
    run_against(server, str(schema_job(tmp_path)), "-i", str(source), "-o", str(out))
    assert server.stats()["errors_by_code"] == {}


def test_a_pydantic_model_as_the_schema_from_python(tmp_path, server):
    pydantic = pytest.importorskip("pydantic")

    class Owner(pydantic.BaseModel):
        team: str
        size: int

    class Ticket(pydantic.BaseModel):
        kind: str
        priority: int
        score: float | None = None
        urgent: bool
        tags: list[str]
        owner: Owner

    rows = [{"id": f"r{i}", "prompt": f"T{i} JSON={json.dumps(ticket(i))}"} for i in range(4)]
    source, out = input_and_outdir(tmp_path, rows)
    job = zbatch.Job(
        input_path=str(source),
        output_dir=str(out),
        base_url=server.base_url,
        output_schema=Ticket,
        temperature=0,
    )
    result = zbatch.run(job, api_key=TEST_KEY)
    assert result.exit_code == 0
    table = read_table(out / "results")
    for name, kind in TICKET_TYPES.items():
        assert table.schema.field(name).type == kind, name
    for row in table.to_pylist():
        i = int(row["id"][1:])
        assert {name: row[name] for name in TICKET_TYPES} == ticket(i)


def test_schema_types_follow_refs_optionals_and_enums():
    schema = {
        "type": "object",
        "$defs": {"Level": {"enum": [1, 2, 3]}},
        "properties": {
            "level": {"$ref": "#/$defs/Level"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "maybe": {"type": ["number", "null"]},
            "free": {"type": "object"},
            "mixed": {"type": ["string", "integer"]},
        },
    }
    fields = {f.name: f for f in answer_fields(schema)}
    assert fields["level"].type == pa.int64()
    assert fields["note"].type == pa.string() and not fields["note"].metadata
    assert fields["maybe"].type == pa.float64()
    assert fields["free"].type == pa.string() and fields["free"].metadata  # JSON text
    assert fields["mixed"].type == pa.string() and fields["mixed"].metadata


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['[output]\nschema = "missing.json"'], "output.schema: the file"),
        (['[output]\nschema = { type = "string" }'], "must describe a JSON object"),
        (
            ['[output]\nschema = { type = "object", properties = { id = { type = "string" } } }'],
            "has the name of a result column",
        ),
        (
            ['[output]\nschema = { properties = { a = { type = "nonsense" } } }'],
            "not a usable JSON Schema",
        ),
        (['[run]\ncache = ""'], "run.cache"),
        (["[request]\nsamples = 0"], "request.samples"),
    ],
)
def test_bad_labelling_settings_are_one_clear_line(tmp_path, lines, message):
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p"}])
    job = tmp_path / "job.toml"
    job.write_text("\n".join(lines) + "\n")
    proc = run_zbatch("validate", str(job), "-i", str(source), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- the response cache -------------------------------------------------------------------

CACHE_ROWS = [{"id": f"c{i}", "prompt": f"Cache question {i}"} for i in range(12)]


def cache_file(home: Path) -> Path:
    return home / "zbatch" / "responses.sqlite"


def cached_entries(home: Path) -> int:
    path = cache_file(home)
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM answers").fetchone()[0])


def test_the_same_job_into_a_new_outdir_sends_nothing(tmp_path, server, own_cache_home):
    source = write_jsonl(tmp_path / "in.jsonl", CACHE_ROWS)
    first, second = tmp_path / "first", tmp_path / "second"
    run_against(server, "-i", str(source), "-o", str(first), "--temperature", "0")
    assert server.stats()["requests"] == len(CACHE_ROWS)
    assert cached_entries(own_cache_home) == len(CACHE_ROWS)

    proc = run_against(server, "-i", str(source), "-o", str(second), "--temperature", "0")
    assert server.stats()["requests"] == len(CACHE_ROWS)  # not one more: counted at the server
    rows = read_table(second / "results").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in CACHE_ROWS)
    prompts = {r["id"]: r["prompt"] for r in CACHE_ROWS}
    for row in rows:  # each row holds its own prompt's answer
        assert row["content"] == answer_for([{"role": "user", "content": prompts[row["id"]]}])
        assert row["cached"] is True and row["attempts"] == 0
    summary = json.loads((second / "summary.json").read_text())
    assert summary["requests"] == 0
    assert summary["cache"]["hits"] == len(CACHE_ROWS)
    assert summary["cache"]["saved_tokens"] > 0 and summary["cache"]["saved_usd"] > 0
    # a hit is not a purchase: nothing charged, nothing counted as spent
    assert summary["cost_usd"] == 0 and summary["spent_usd_all_runs"] == 0
    assert "from the cache" in proc.stdout
    status = run_zbatch("status", str(second), "--json")
    figures = json.loads(status.stdout)
    assert figures["cache"]["hits"] == len(CACHE_ROWS)
    assert figures["cost_usd"] == 0
    assert "from the cache" in run_zbatch("status", str(second)).stdout
    # the cache holds answers under hashed keys: never the API key, never a prompt
    stored = b"".join(p.read_bytes() for p in cache_file(own_cache_home).parent.iterdir())
    assert TEST_KEY.encode() not in stored and b"Cache question" not in stored


def test_only_deterministic_requests_are_cached_unless_cache_all(tmp_path, server, own_cache_home):
    source = write_jsonl(tmp_path / "in.jsonl", CACHE_ROWS[:4])
    run_against(server, "-i", str(source), "-o", str(tmp_path / "a"), "--temperature", "0.7")
    run_against(server, "-i", str(source), "-o", str(tmp_path / "b"), "--temperature", "0.7")
    assert server.stats()["requests"] == 8  # sampled answers: each run buys its own
    assert cached_entries(own_cache_home) == 0
    all_ = ["--temperature", "0.7", "--cache", "all"]
    run_against(server, "-i", str(source), "-o", str(tmp_path / "c"), *all_)
    run_against(server, "-i", str(source), "-o", str(tmp_path / "d"), *all_)
    assert server.stats()["requests"] == 12
    # --cache off: neither read nor filled
    run_against(server, "-i", str(source), "-o", str(tmp_path / "e"), "--cache", "off", *all_[:2])
    assert server.stats()["requests"] == 16


def test_simulated_answers_never_enter_the_cache_nor_come_from_it(tmp_path, server, own_cache_home):
    source = write_jsonl(tmp_path / "in.jsonl", CACHE_ROWS[:5])
    sim = run_zbatch(
        "run", "-i", str(source), "-o", str(tmp_path / "s"), "--temperature", "0", "--simulate"
    )
    assert sim.returncode in (0, 1), sim.stderr
    assert cached_entries(own_cache_home) == 0
    run_against(server, "-i", str(source), "-o", str(tmp_path / "real"), "--temperature", "0")
    assert server.stats()["requests"] == 5  # nothing simulated passed for an answer
    assert cached_entries(own_cache_home) == 5
    sim = run_zbatch(
        "run", "-i", str(source), "-o", str(tmp_path / "s2"), "--temperature", "0", "--simulate"
    )
    rows = read_table(tmp_path / "s2.simulated" / "results").to_pylist()
    assert rows and all(not r["cached"] and r["model"].endswith("-simulated") for r in rows)


def test_a_cache_path_and_the_cache_commands(tmp_path, server):
    source = write_jsonl(tmp_path / "in.jsonl", CACHE_ROWS[:6])
    path = tmp_path / "team-cache.sqlite"
    args = ["-i", str(source), "--temperature", "0", "--cache", str(path)]
    run_against(server, *args, "-o", str(tmp_path / "a"))
    run_against(server, *args, "-o", str(tmp_path / "b"))
    assert server.stats()["requests"] == 6
    stats = json.loads(run_zbatch("cache", "stats", "--path", str(path), "--json").stdout)
    assert stats["entries"] == 6 and stats["hits"] == 6 and stats["bytes"] > 0
    assert "answers    6" in run_zbatch("cache", "stats", "--path", str(path)).stdout
    kept = run_zbatch("cache", "prune", "--path", str(path), "--older-than", "1d")
    assert kept.returncode == 0 and "removed 0 answers" in kept.stdout
    gone = run_zbatch("cache", "prune", "--path", str(path), "--older-than", "0s")
    assert "removed 6 answers" in gone.stdout
    bad = run_zbatch("cache", "prune", "--path", str(path), "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than 'soon'" in bad.stderr
    run_against(server, *args, "-o", str(tmp_path / "c"))
    assert server.stats()["requests"] == 12


def test_concurrent_runs_share_one_cache(tmp_path, server, own_cache_home):
    """Several processes read and write the cache at once (overlapping rows); afterwards it
    holds every answer once, and a run of all the rows sends nothing."""
    rows = [{"id": f"w{i}", "prompt": f"Shared question {i}"} for i in range(60)]
    procs = []
    for n in range(4):
        part = rows[n * 12 : n * 12 + 24]  # each overlaps the next by 12 rows
        source = write_jsonl(tmp_path / f"in{n}.jsonl", part)
        args = ["-i", str(source), "-o", str(tmp_path / f"out{n}"), "--temperature", "0"]
        procs.append(start_zbatch("run", *args, "--base-url", server.base_url, "--part-rows", "3"))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert cached_entries(own_cache_home) == 60
    bought = server.stats()["requests"]
    assert 60 <= bought <= 4 * 24
    source = write_jsonl(tmp_path / "all.jsonl", rows)
    run_against(server, "-i", str(source), "-o", str(tmp_path / "all"), "--temperature", "0")
    assert server.stats()["requests"] == bought
    table = read_table(tmp_path / "all" / "results").to_pylist()
    assert len(table) == 60 and all(r["cached"] for r in table)
    prompts = {r["id"]: r["prompt"] for r in rows}
    for row in table:
        assert row["content"] == answer_for([{"role": "user", "content": prompts[row["id"]]}])


def test_a_repaired_answer_is_what_the_cache_keeps(tmp_path, server):
    rows = [{"id": "fixed", "prompt": f"Ticket F WRONG=1 JSON={json.dumps(ticket(3))}"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    job = schema_job(tmp_path)
    run_against(server, str(job), "-i", str(source), "-o", str(tmp_path / "a"))
    run_against(server, str(job), "-i", str(source), "-o", str(tmp_path / "b"))
    assert server.stats()["requests"] == 2  # the first answer and its repair, once
    (row,) = read_table(tmp_path / "b" / "results").to_pylist()
    assert row["cached"] and row["priority"] == ticket(3)["priority"]


# --- samples ------------------------------------------------------------------------------

VOTE_ROWS = [
    {"id": "v0", "prompt": "Sort v0 VOTES=red|blue|red"},
    {"id": "v1", "prompt": "Sort v1 VOTES=blue|blue|blue"},
    {"id": "v2", "prompt": "Sort v2 VOTES=green|red|blue"},
    {"id": "v3", "prompt": "Sort v3 VOTES=maybe|red|maybe"},  # "maybe" is no label
]
EXPECTED = {  # id -> (votes as a multiset, majority, agreement)
    "v0": (["red", "red", "blue"], "red", 2 / 3),
    "v1": (["blue", "blue", "blue"], "blue", 1.0),
    "v2": (["green", "red", "blue"], None, 1 / 3),
    "v3": (["red", None, None], "red", 1 / 3),
}


def check_votes(out: Path) -> None:
    rows = {row["id"]: row for row in read_table(out / "results").to_pylist()}
    assert sorted(rows) == ["v0", "v1", "v2", "v3"]
    for row_id, (votes, majority, agreement) in EXPECTED.items():
        row = rows[row_id]
        assert sorted(row["votes"], key=str) == sorted(votes, key=str), row_id
        assert row["agreement"] == pytest.approx(agreement)
        if majority is not None:
            assert row["label"] == majority
        else:  # a three-way tie: the first answer's label
            assert row["label"] == row["votes"][0]
        assert row["content"] == row["label"]


def test_samples_on_zai_are_separate_requests(tmp_path, server):
    source, out = input_and_outdir(tmp_path, VOTE_ROWS)
    job = tmp_path / "job.toml"
    job.write_text(
        '[request]\nsamples = 3\ntemperature = 0.8\n[labels]\nchoices = ["red", "blue", "green"]\n'
    )
    run_against(server, str(job), "-i", str(source), "-o", str(out))
    assert server.stats()["requests"] == 3 * len(VOTE_ROWS)
    check_votes(out)
    summary = json.loads((out / "summary.json").read_text())
    bodies = server.stats()["bodies_sample"]
    assert all("n" not in body for body in bodies)
    # spend counts all K answers: every request's tokens
    per_request = [b for b in bodies]
    assert summary["tokens"]["prompt"] >= len(per_request)
    results = read_table(out / "results")
    assert results.schema.field("votes").type == pa.list_(pa.string())
    assert results.schema.field("agreement").type == pa.float64()
    assert sum(results.column("prompt_tokens").to_pylist()) == summary["tokens"]["prompt"]


def test_samples_use_n_where_the_provider_has_it(tmp_path):
    source, out = input_and_outdir(tmp_path, VOTE_ROWS)
    job = tmp_path / "job.toml"
    job.write_text(
        '[request]\nsamples = 3\ntemperature = 0.8\n[labels]\nchoices = ["red", "blue", "green"]\n'
    )
    with ZaiServer(structured="json_schema") as server:
        args = ["-i", str(source), "-o", str(out), "--provider", "openai", "--model", "m"]
        run_against(server, str(job), *args)
        assert server.stats()["requests"] == len(VOTE_ROWS)
        assert all(body["n"] == 3 for body in server.stats()["bodies_sample"])
    check_votes(out)
    rows = {row["id"]: row for row in read_table(out / "results").to_pylist()}
    assert rows["v0"]["votes"] == ["red", "blue", "red"]  # in choice order


def test_a_server_ignoring_n_stops_the_run_and_no_n_choices_sends_each_sample(tmp_path):
    """llama-cpp-python's server answers n = 3 with one choice: a row is not given one answer
    as three unanimous votes. The first rows' verdict stops the run naming n_choices; the same
    command with --no-n-choices sends each sample as its own request."""
    rows = [
        {"id": f"{row['id']}-{k}", "prompt": row["prompt"].replace(" VOTES", f"{k} VOTES")}
        for k in range(6)
        for row in VOTE_ROWS
    ]
    source, out = input_and_outdir(tmp_path, rows)
    job = tmp_path / "job.toml"
    job.write_text(
        '[request]\nsamples = 3\ntemperature = 0.8\n[labels]\nchoices = ["red", "blue", "green"]\n'
    )
    args = ["-i", str(source), "-o", str(out), "--provider", "openai", "--model", "m", "-c", "2"]
    with ZaiServer(structured="json_object") as server:
        stopped = run_against(server, str(job), *args, expect=3)
        assert "endpoint.n_choices = false" in stopped.stderr
        assert "asked for 3 answers with n, got 1" in stopped.stderr
        assert not (out / "results").exists() or read_table(out / "results").num_rows == 0
        asked = server.stats()["requests"]
        assert all(body["n"] == 3 for body in server.stats()["bodies_sample"])
        run_against(server, str(job), *args, "--no-n-choices")
        assert server.stats()["requests"] == asked + 3 * len(rows)
    table = {row["id"]: row for row in read_table(out / "results").to_pylist()}
    assert sorted(table) == sorted(row["id"] for row in rows)
    for row_id, row in table.items():
        votes, _, agreement = EXPECTED[row_id.split("-")[0]]
        assert sorted(row["votes"], key=str) == sorted(votes, key=str), row_id
        assert row["agreement"] == pytest.approx(agreement)


def test_samples_without_labels_vote_on_the_answers_text(tmp_path, server):
    rows = [{"id": f"t{i}", "prompt": f"Say t{i} VOTES=a{i}|b{i}|a{i}|c{i}"} for i in range(5)]
    source, out = input_and_outdir(tmp_path, rows)
    job = tmp_path / "job.toml"
    job.write_text("[request]\nsamples = 4\ntemperature = 1\n")
    run_against(server, str(job), "-i", str(source), "-o", str(out))
    table = read_table(out / "results")
    assert "label" not in table.column_names
    for row in table.to_pylist():
        i = row["id"][1:]
        assert sorted(row["votes"]) == sorted([f"a{i}", f"b{i}", f"a{i}", f"c{i}"])
        assert row["content"] == f"a{i}" and row["agreement"] == 0.5


def test_samples_with_a_schema_take_the_majority_per_enum_field(tmp_path):
    schema = {
        "type": "object",
        "properties": {"kind": {"enum": ["Bug", "Feature"]}, "note": {"type": "string"}},
        "required": ["kind"],
    }
    answers = ['{"kind":"Bug","note":"x"}', '{"kind":"feature","note":"y"}', '{"kind":"Bug"}']
    rows = [{"id": "s", "prompt": "VOTES=" + "|".join(answers)}]
    source, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(structured="json_schema") as server:
        job = zbatch.Job(
            input_path=str(source),
            output_dir=str(out),
            base_url=server.base_url,
            provider="openai",
            model="m",
            output_schema=schema,
            samples=3,
            temperature=0.5,
        )
        assert zbatch.run(job, api_key=TEST_KEY).exit_code == 0
    (row,) = read_table(out / "results").to_pylist()
    assert row["votes"] == ["Bug", "Feature", "Bug"]
    assert row["kind"] == "Bug" and row["note"] == "x"
    assert row["agreement"] == pytest.approx(2 / 3)


def test_no_test_touches_the_real_cache(own_cache_home):
    """The autouse fixture points XDG_CACHE_HOME at a temporary folder for every test."""
    from zbatch.store.cache import default_path

    assert default_path() == cache_file(own_cache_home)
    assert zbatch_env()["XDG_CACHE_HOME"] == str(own_cache_home)


def test_ids_end_once_with_samples_even_when_a_sample_request_fails(tmp_path, server):
    rows = [
        {"id": "ok", "prompt": "VOTES=red|red|blue"},
        {"id": "bad", "prompt": "Blocked FAIL=1301*"},
    ]
    source, out = input_and_outdir(tmp_path, rows)
    job = tmp_path / "job.toml"
    job.write_text(
        '[request]\nsamples = 3\ntemperature = 0.8\n[labels]\nchoices = ["red", "blue"]\n'
    )
    run_against(server, str(job), "-i", str(source), "-o", str(out), expect=1)
    results, errors = outcome_ids(out)
    assert results == ["ok"] and errors == ["bad"]


# --- the README, as written ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def readme_commands(marker: str) -> list[list[str]]:
    """The zbatch commands of the README block that holds ``marker``, comments removed."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Structured answers, the response cache and samples\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL) if marker in b)
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.strip()]


def test_the_readme_cache_commands_run_as_written(tmp_path, server):
    import shutil

    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    server.configure(answer="positive|negative|neutral")
    env = zbatch_env(ZAI_BASE_URL=server.base_url)
    outputs = []
    for command in readme_commands("cache stats"):
        assert command[0] == "zbatch"
        proc = run_zbatch(*command[1:], env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
        if command[1] == "run":  # the second run sends nothing
            assert server.stats()["requests"] == 40
    assert re.search(r"from the cache +40 rows \(saved \$0\.0\d*[1-9]", outputs[2])
    assert "answers    40" in outputs[3]
    assert "removed 0 answers" in outputs[4]
    rows = read_table(tmp_path / "out" / "sentiment-prompt-b" / "results").to_pylist()
    assert len(rows) == 40 and all(row["cached"] for row in rows)


def test_the_readme_schema_rehearsal_runs_as_written(tmp_path):
    import shutil

    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (command,) = readme_commands("--simulate")
    proc = run_zbatch(*command[1:], cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr  # simulated faults may fail a row
    table = read_table(tmp_path / "out" / "review_schema.simulated" / "results")
    assert table.num_rows >= 15
    assert table.schema.field("aspects").type == pa.list_(pa.string())
    assert table.schema.field("stars_guess").type == pa.int64()
    assert table.schema.field("would_recommend").type == pa.bool_()
    assert set(table.column("sentiment").to_pylist()) <= {"positive", "negative", "neutral"}


def test_a_schema_without_fastjsonschema_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastjsonschema", None)  # as if not installed
    with pytest.raises(zbatch.JobError, match=r"pip install 'zbatch\[schema\]'"):
        zbatch.Job(input_path="in.jsonl", output_dir=str(tmp_path), output_schema=TICKET)


def test_a_rows_samples_come_from_the_cache_together(tmp_path, server):
    """With cache = "all", a samples row's K answers are one cache entry: the same job into a
    new OUTDIR sends nothing and keeps each row's votes."""
    source = write_jsonl(tmp_path / "in.jsonl", VOTE_ROWS)
    job = tmp_path / "job.toml"
    job.write_text(
        '[request]\nsamples = 3\ntemperature = 0.8\n[labels]\nchoices = ["red", "blue", "green"]\n'
        '[run]\ncache = "all"\n'
    )
    run_against(server, str(job), "-i", str(source), "-o", str(tmp_path / "a"))
    run_against(server, str(job), "-i", str(source), "-o", str(tmp_path / "b"))
    assert server.stats()["requests"] == 3 * len(VOTE_ROWS)
    first = {r["id"]: r for r in read_table(tmp_path / "a" / "results").to_pylist()}
    again = {r["id"]: r for r in read_table(tmp_path / "b" / "results").to_pylist()}
    check_votes(tmp_path / "b")
    for row_id, row in again.items():
        assert row["cached"] and not first[row_id]["cached"]
        assert sorted(row["votes"], key=str) == sorted(first[row_id]["votes"], key=str)
        assert row["label"] == first[row_id]["label"]
