"""Odd inputs and a full disk (issue 11, items 5 and 7 and the low items): each class of
failure with at least two triggers, run against the loopback server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    input_and_outdir,
    prompt_rows,
    read_export,
    read_table,
    run_args,
    run_zbatch,
    write_jsonl,
)
from helpers import user
from test_crash_safety import assert_each_id_once, run_wrapped, summary
from zai_server import ZaiServer, answer_for

import zbatch
from zbatch import Job

# ------------------------------------------------------------------ export --with-input (7)

MIXED_ROWS: list[dict[str, Any]] = [
    {"id": "m1", "prompt": "first", "meta": 1, "tags": ["a", "b"], "where": {"x": 1}},
    {"id": "m2", "prompt": "second", "meta": "text", "tags": [], "where": {"x": 2}},
    {"id": "m3", "prompt": "third", "meta": {"deep": [1, 2]}, "tags": ["c"], "where": None},
    {"id": "m4", "prompt": "fourth", "meta": True, "tags": None, "where": {"x": 4}},
]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "csv"])
def test_export_with_input_keeps_mixed_type_and_nested_jsonl_columns(
    server: ZaiServer, tmp_path: Path, suffix: str
) -> None:
    """A JSONL column that changes type between rows (``meta``) and list/struct columns
    (``tags``, ``where``) export with every row's own values; a row not run yet is pending."""
    source = write_jsonl(tmp_path / "in.jsonl", MIXED_ROWS[:3])
    job = Job(input_path=str(source), output_dir=str(tmp_path / "out"), base_url=server.base_url)
    assert zbatch.run(job, api_key="k").exit_code == 0
    write_jsonl(source, MIXED_ROWS)  # the input grew: m4 is pending
    target = tmp_path / f"x.{suffix}"
    assert zbatch.export(job.output_dir, target, with_input=True).rows == 4
    exported = read_export(target)
    assert [row["id"] for row in exported] == ["m1", "m2", "m3", "m4"]
    for source_row, row in zip(MIXED_ROWS, exported, strict=True):
        assert row["prompt"] == source_row["prompt"]
        if suffix == "jsonl":  # JSONL gives every value back as it was in the input
            assert row["meta"] == source_row["meta"]
            assert row["tags"] == source_row["tags"]
            assert row["where"] == source_row["where"]
        elif suffix == "parquet":  # the mixed column as JSON text, nested ones as Arrow
            assert json.loads(row["meta"]) == source_row["meta"]
            assert row["tags"] == source_row["tags"]
        if row["id"] == "m4":
            assert row["status"] == "pending" and row["content"] in (None, "")
        else:
            assert row["status"] == "ok"
            assert row["content"] == answer_for(user(source_row["prompt"]))


def test_export_with_input_handles_parquet_list_and_struct_columns(
    server: ZaiServer, tmp_path: Path
) -> None:
    """Parquet input with a list and a struct column (Arrow joins refuse both) exports."""
    table = pa.table(
        {
            "id": ["p1", "p2", "p3"],
            "prompt": ["alpha", "beta", "gamma"],
            "scores": [[1.5, 2.0], [], None],
            "who": [{"name": "a", "age": 3}, {"name": "b", "age": None}, None],
            "content": ["input's own", "column", "clashes"],
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    job = Job(input_path=str(source), output_dir=str(tmp_path / "out"), base_url=server.base_url)
    assert zbatch.run(job, api_key="k").exit_code == 0
    target = tmp_path / "x.parquet"
    zbatch.export(job.output_dir, target, with_input=True)
    exported = pq.read_table(target).to_pylist()
    assert [row["id"] for row in exported] == ["p1", "p2", "p3"]
    for source_row, row in zip(table.to_pylist(), exported, strict=True):
        assert row["content"] == answer_for(user(source_row["prompt"]))
        assert row["input_content"] == source_row["content"]
        assert row["scores"] == source_row["scores"]
        assert row["who"] == source_row["who"]


# ------------------------------------------------------------------------ a full disk (5)


def test_no_room_at_the_start_stops_before_the_first_request(tmp_path: Path) -> None:
    """A fresh OUTDIR and one that holds earlier results: with no room on the disk, the run
    exits 74 with one line naming the OUTDIR and what to do, and sends nothing."""
    rows = prompt_rows(30)
    inp, out = input_and_outdir(tmp_path, rows[:10])
    with ZaiServer() as srv:
        args = run_args(inp, out, srv)
        first = run_wrapped({"free": 5000}, *args)
        assert first.returncode == 74, first.stderr
        assert first.stderr.strip().splitlines() == [
            f"Error: {out} has 0.0 MB free, less than the next part needs (about 1.0 MB), so "
            "no new request is sent: free space or use another OUTDIR, then run the same "
            "command to resume"
        ]
        assert srv.stats()["requests"] == 0
        assert run_zbatch(*args).returncode == 0  # room again: the same command runs
        write_jsonl(inp, rows)
        before = srv.stats()["requests"]
        second = run_wrapped({"free": 0}, *args)
        assert second.returncode == 74, second.stderr
        assert f"Error: {out} has 0.0 MB free" in second.stderr
        assert srv.stats()["requests"] == before == 10


def test_a_disk_filling_up_between_commits_stops_sending_and_keeps_what_it_bought(
    tmp_path: Path,
) -> None:
    """The disk fills after the first part: the run stops sending (exit 74), commits the
    answers in flight, and every answer it paid for is in results/ (none bought twice)."""
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01) as srv:
        args = run_args(inp, out, srv, "-c", "4", "--part-rows", "20")
        stopped = run_wrapped({"free": 1000, "nth": 2}, *args)
        assert stopped.returncode == 74, stopped.stderr
        assert (
            stopped.stderr.strip()
            .splitlines()[-1]
            .startswith(f"Error: {out} has 0.0 MB free, less than the next part needs")
        )
        sent = srv.stats()["requests"]
        saved = read_table(out / "results").column("id").to_pylist()
        assert len(saved) == sent < len(rows)  # every paid answer saved, the rest not sent
        assert run_zbatch(*args).returncode == 0
        assert srv.stats()["requests"] == len(rows)
        assert_each_id_once(out, rows)


@pytest.mark.parametrize("fault", [{"errno": "ENOSPC"}, {"errno": "EDQUOT"}])
def test_a_commit_failing_for_room_says_how_many_paid_answers_wait(
    tmp_path: Path, fault: dict[str, Any]
) -> None:
    """When no part can be written (disk full, quota), exit 74 says how many paid answers
    were not saved; the next run sends them again."""
    rows = prompt_rows(12)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        failed = run_wrapped(fault, *run_args(inp, out, srv))
        assert failed.returncode == 74, failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert line.endswith(
            "then run the same command to resume (12 paid answers wait to be saved, of 12 "
            "finished rows not saved; the next run sends them again)"
        ), line
        assert summary(out)["exit_code"] == 74


# ------------------------------------------------------------------------------ low items


def test_changing_id_column_against_an_outdir_is_refused(tmp_path: Path) -> None:
    """Setting, changing or dropping --id-column on an existing OUTDIR: exit 2, one line."""
    rows = [{"id": f"r{i}", "key": f"k{i}", "other": f"o{i}", "prompt": f"q{i}"} for i in range(3)]
    inp, out = input_and_outdir(tmp_path, rows)
    refused = (
        f"Error: {out} holds results of a different request (id_column changed). Use a new "
        "output directory, or --force to start a new generation of results here"
    )
    with ZaiServer() as srv:
        assert run_zbatch(*run_args(inp, out, srv)).returncode == 0
        proc = run_zbatch(*run_args(inp, out, srv, "--id-column", "key"))
        assert (proc.returncode, proc.stderr.strip()) == (2, refused)
        keyed = tmp_path / "keyed"
        assert run_zbatch(*run_args(inp, keyed, srv, "--id-column", "key")).returncode == 0
        for extra in (["--id-column", "other"], []):
            proc = run_zbatch(*run_args(inp, keyed, srv, *extra))
            assert (proc.returncode, proc.stderr.strip()) == (
                2,
                refused.replace(str(out), str(keyed)),
            )
        assert srv.stats()["requests"] == 6
    # Unset, it is left out of the fingerprint: OUTDIRs of earlier versions keep theirs.
    assert "id_column" not in Job(input_path=str(inp), output_dir=str(out)).shaping()


def test_keep_values_of_another_type_are_counted_and_warned_about(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A keep column that changes type (a string, then a float, in an int column; across two
    files too) stores null for those rows, counts them, and warns once in run.log."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(
        folder / "a.jsonl",
        [{"id": "a1", "prompt": "p1", "n": 5}, {"id": "a2", "prompt": "p2", "n": "five"}],
    )
    write_jsonl(
        folder / "b.jsonl",
        [{"id": "b1", "prompt": "p3", "n": 7.5}, {"id": "b2", "prompt": "p4", "n": 8}],
    )
    out = tmp_path / "out"
    job = Job(
        input_path=str(folder), output_dir=str(out), base_url=server.base_url, keep_columns=("n",)
    )
    result = zbatch.run(job, api_key="k")
    assert result.exit_code == 0
    assert result.stats.keep_mistyped == {"n": 2}
    kept = {r["id"]: r["n"] for r in read_table(out / "results").to_pylist()}
    assert kept == {"a1": 5, "a2": None, "b1": None, "b2": 8}
    warnings = [
        line for line in (out / "run.log").read_text().splitlines() if "keep column" in line
    ]
    assert len(warnings) == 1
    assert warnings[0].endswith(
        "WARNING keep column 'n': a.jsonl line 2 holds a str, not the column's type; stored as "
        "null (summary.json counts such rows)"
    )
    assert json.loads((out / "summary.json").read_text())["keep_columns_mistyped"] == {"n": 2}


def test_nested_values_render_as_json_in_templates() -> None:
    """Objects, lists, booleans and the nulls inside them render as JSON, at the top level
    and reached by index; !r still gives Python's repr."""
    from zbatch import prompt

    job = Job(
        input_path="x.jsonl",
        output_dir="out",
        template="{meta} | {flag} | {items} | {items[1]} | {flag!r}",
    )
    data = {"meta": {"a": 1, "b": None}, "flag": True, "items": [1, {"é": False}]}
    body = prompt.render(data, job)
    assert body["messages"][-1]["content"] == (
        '{"a": 1, "b": null} | true | [1, {"é": false}] | {"é": false} | True'
    )


def test_a_utf8_bom_at_the_start_of_a_jsonl_file_is_accepted(
    server: ZaiServer, tmp_path: Path
) -> None:
    """A BOM before the first line of a file (one file, and the second file of a folder)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, rows in (("a.jsonl", ["a1", "a2"]), ("b.jsonl", ["b1"])):
        text = "".join(json.dumps({"id": i, "prompt": f"about {i}"}) + "\n" for i in rows)
        (folder / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    job = Job(input_path=str(folder), output_dir=str(tmp_path / "out"), base_url=server.base_url)
    assert zbatch.plan(job).to_send == 3
    result = zbatch.run(job, api_key="k")
    assert (result.exit_code, result.stats.ok) == (0, 3)
    results = {r["id"]: r["content"] for r in read_table(tmp_path / "out" / "results").to_pylist()}
    assert results == {i: answer_for(user(f"about {i}")) for i in ("a1", "a2", "b1")}


def test_ids_that_are_not_finite_numbers_are_refused_up_front(
    server: ZaiServer, tmp_path: Path
) -> None:
    """NaN, 1e400 (inf) and -Infinity ids become missing_id rows; nothing is sent for them."""
    lines = [
        '{"id": NaN, "prompt": "a"}',
        '{"id": 1e400, "prompt": "b"}',
        '{"id": -Infinity, "prompt": "c"}',
        '{"id": 1.5, "prompt": "d"}',
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    job = Job(input_path=str(source), output_dir=str(tmp_path / "out"), base_url=server.base_url)
    assert (zbatch.plan(job).to_send, zbatch.plan(job).unusable) == (1, 3)
    result = zbatch.run(job, api_key="k")
    assert result.stats.errors == {"missing_id": 3}
    assert server.stats()["requests"] == 1
    assert [r["id"] for r in read_table(tmp_path / "out" / "results").to_pylist()] == ["1.5"]


def test_a_fixed_line_no_longer_counts_as_failed(server: ZaiServer, tmp_path: Path) -> None:
    """A line that was not JSON and one without an id fail under their place; once both are
    fixed and sent under their real ids, status and export no longer count those failures."""
    source = tmp_path / "in.jsonl"
    good = json.dumps({"id": "g1", "prompt": "good"})
    source.write_text(f'{good}\n{{"id": "b2", "prompt": \n{{"prompt": "no id"}}\n')
    out = tmp_path / "out"
    job = Job(input_path=str(source), output_dir=str(out), base_url=server.base_url)
    assert zbatch.run(job, api_key="k").stats.errors == {"invalid_input": 1, "missing_id": 1}
    assert zbatch.status(out).failed == 2
    fixed = [
        json.dumps({"id": "b2", "prompt": "was broken"}),
        json.dumps({"id": "b3", "prompt": "no id"}),
    ]
    source.write_text("\n".join([good, *fixed]) + "\n")
    assert zbatch.status(out).failed == 2  # not sent yet: the places still count
    assert zbatch.run(job, api_key="k").stats.ok == 2
    status = zbatch.status(out)
    assert (status.failed, status.errors, status.done) == (0, {}, 3)
    outcomes = zbatch.read_results(out).to_pylist()
    assert sorted((r["id"], r["status"]) for r in outcomes) == [
        ("b2", "ok"),
        ("b3", "ok"),
        ("g1", "ok"),
    ]
