"""Odd values never cost paid work (issue: hostile answers and odd values): each class of
failure with two or more triggers, run in-process against the loopback server, twice — the
second run must send nothing and lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import zbatch
from zbatch import Job
from zbatch.store import LocalStorage, PartWriter


def write_ascii_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    """JSON with \\u escapes, so lone surrogates are valid JSON text in the file."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="ascii")
    return path


def test_input_values_that_cannot_be_encoded_become_invalid_input_rows_in_run_and_plan(
    tmp_path, server
):
    rows = [
        {"id": "s1", "prompt": "bad \ud800 text"},  # in the prompt: the body cannot be sent
        {"id": "bad\udfff", "prompt": "a fine prompt"},  # in the id: it cannot be stored
        {"id": "t1", "text": "templ \udc00", "prompt": "x"},
        {"id": "ok1", "prompt": "a fine prompt"},
    ]
    source = write_ascii_jsonl(tmp_path / "in.jsonl", rows)
    job = Job(
        input_path=str(source),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        template="{prompt} / {text}",
        defaults={"text": "-"},
    )
    plan = zbatch.plan(job)
    assert (plan.to_send, plan.unusable) == (1, 3)
    result = zbatch.run(job, api_key="k")
    assert result.exit_code == 1
    assert (result.stats.ok, result.stats.failed) == (1, 3)
    assert result.stats.errors == {"invalid_input": 3}
    assert server.stats()["requests"] == 1
    again = zbatch.run(job, api_key="k")
    assert server.stats()["requests"] == 1  # nothing bought again
    assert (again.stats.skipped, again.stats.failed) == (4, 0)
    outcomes = zbatch.read_results(job.output_dir).to_pylist()
    assert sorted(row["status"] for row in outcomes) == ["failed"] * 3 + ["ok"]


def test_answers_that_do_not_fit_the_schema_are_kept_as_error_rows_not_lost(tmp_path, server):
    """A keep column whose value cannot be stored: the answer is kept (as an error row with
    its text), the other rows are committed, and nothing is bought twice."""
    rows = [
        {"id": "k1", "prompt": "first", "note": "odd \udc00"},
        {"id": "k2", "prompt": "second", "note": "plain"},
    ]
    source = write_ascii_jsonl(tmp_path / "in.jsonl", rows)
    job = Job(
        input_path=str(source),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        keep_columns=("note",),
    )
    result = zbatch.run(job, api_key="k")
    assert server.stats()["requests"] == 2
    assert (result.stats.ok, result.stats.failed) == (1, 1)
    outcomes = {row["id"]: row for row in zbatch.read_results(job.output_dir).to_pylist()}
    assert outcomes["k2"]["status"] == "ok" and outcomes["k2"]["note"] == "plain"
    assert outcomes["k1"]["error_type"] == "invalid_response"
    assert outcomes["k1"]["answer"].startswith("echo:")  # the paid answer, kept as text
    zbatch.run(job, api_key="k")
    assert server.stats()["requests"] == 2


def test_a_float_in_an_integer_column_is_refused_not_silently_cut(tmp_path):
    schema = pa.schema([("id", pa.string()), ("n", pa.int64()), ("m", pa.int32())])
    writer = PartWriter(LocalStorage(tmp_path), "t", schema, prefix="x")
    rows = [("a", 1, 1), ("b", 1.5, 2), ("c", 3, 2**40), ("d", 2.0, 4)]
    odd = writer.commit(rows)
    assert [row for row, _ in odd] == [("b", 1.5, 2), ("c", 3, 2**40)]
    table = pq.read_table(tmp_path / "t" / LocalStorage(tmp_path).list("t")[0])
    assert table.to_pylist() == [{"id": "a", "n": 1, "m": 1}, {"id": "d", "n": 2, "m": 4}]
