"""The labelling workflow: stdin and CSV/TSV input, exports in input order, the column check
over the first rows, and keep columns that never force a new paid generation."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    ZBATCH,
    prompt_rows,
    read_export,
    run_against,
    run_zbatch,
    write_jsonl,
    zbatch_env,
)
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import ZaiServer, answer_for

import zbatch
from zbatch.errors import JobError
from zbatch.source import DoneRows, RawRow, count_rows, open_input


def asked(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}])


def run_stdin(
    srv: ZaiServer, data: bytes, *args: str, command: str = "run"
) -> subprocess.CompletedProcess[str]:
    """``zbatch run -i - ARGS`` with ``data`` piped in."""
    extra = ["--base-url", srv.base_url] if command == "run" else []
    return subprocess.run(
        [ZBATCH, command, "-i", "-", *args, *extra],
        input=data.decode(),
        env=zbatch_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


# --- stdin ----------------------------------------------------------------------------------


def test_stdin_input_runs_and_piping_the_same_rows_again_sends_only_new_ones(tmp_path, server):
    out = tmp_path / "out"
    first = prompt_rows(5)
    proc = run_stdin(server, jsonl_bytes(first), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert server.stats()["requests"] == 5
    more = prompt_rows(8)  # the same five, then three new ones
    proc = run_stdin(server, jsonl_bytes(more), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert server.stats()["requests"] == 8
    results = {row["id"]: row for row in zbatch.read_results(out).to_pylist()}
    assert {i: r["content"] for i, r in results.items()} == {
        row["id"]: asked(row["prompt"]) for row in more
    }


def test_stdin_input_has_a_dry_run_that_sends_nothing(tmp_path, server):
    proc = run_stdin(
        server, jsonl_bytes(prompt_rows(3)), "-o", str(tmp_path / "o"), command="validate"
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 in input, 0 already done, 3 to send" in proc.stdout
    assert server.stats()["requests"] == 0


def test_an_empty_stdin_is_refused_with_one_line(tmp_path, server):
    proc = run_stdin(server, b"", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr == "Error: input file stdin is empty: it has no rows\n"


def test_stdin_on_a_terminal_is_refused_rather_than_waited_on(tmp_path):
    import pty

    terminal, side = pty.openpty()
    try:
        proc = subprocess.run(
            [ZBATCH, "run", "-i", "-", "-o", str(tmp_path / "o"), "--simulate"],
            stdin=side,
            env=zbatch_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(side)
    assert proc.returncode == 2
    assert (
        proc.stderr == "Error: input is - (stdin), but stdin is a terminal: pipe JSONL lines in\n"
    )


@pytest.mark.parametrize(
    ("flags", "what"),
    [(("--shard", "1/2"), "--shard or --cluster"), (("--mode", "batch"), "--mode batch")],
)
def test_stdin_is_refused_where_the_input_is_read_again_elsewhere(tmp_path, server, flags, what):
    proc = run_stdin(server, jsonl_bytes(prompt_rows(2)), "-o", str(tmp_path / "o"), *flags)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"Error: input - (stdin) works for an online run in one process only: for {what}, "
        "save it to a file (or object storage) first\n"
    )
    assert server.stats()["requests"] == 0


def test_the_column_check_works_on_stdin_before_anything_is_sent(tmp_path, server):
    proc = run_stdin(
        server, jsonl_bytes(prompt_rows(2)), "-o", str(tmp_path / "o"), "--template", "{nope}"
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "Error: stdin: the job needs column(s) 'nope' that the input lacks (it has: id, "
        "prompt). Fix the template/columns or the input; nothing was sent\n"
    )
    assert server.stats()["requests"] == 0


def test_a_stdin_job_exports_in_commit_order_and_says_why(tmp_path, server):
    out = tmp_path / "out"
    assert run_stdin(server, jsonl_bytes(prompt_rows(3)), "-o", str(out), "-q").returncode == 0
    proc = run_zbatch("export", str(out), "-o", str(tmp_path / "all.jsonl"))
    assert proc.returncode == 0
    assert proc.stderr == (
        "Note: rows in commit order, keep columns as stored: the input was piped in on stdin "
        "(-i -): it cannot be read again\n"
    )
    exported = read_export(tmp_path / "all.jsonl")
    assert sorted(row["id"] for row in exported) == [row["id"] for row in prompt_rows(3)]


# --- CSV / TSV ------------------------------------------------------------------------------


def test_csv_and_tsv_rows_are_read_as_strings_with_the_line_they_start_on(tmp_path):
    (tmp_path / "a.csv").write_text('id,text\n1,"two\nlines"\n02,plain\n3,,\n')
    (tmp_path / "b.tsv.gz").write_bytes(gzip.compress(b"id\ttext\nt1\ttab, separated\n"))
    files = open_input(str(tmp_path / "*sv*"))
    assert files.columns == frozenset({"id", "text"})
    rows = list(files.rows())
    assert [(r.where, r.data, r.problem) for r in rows] == [
        ("a.csv line 2", {"id": "1", "text": "two\nlines"}, None),
        ("a.csv line 4", {"id": "02", "text": "plain"}, None),
        ("a.csv line 5", None, "a.csv line 5 has 3 fields, the header has 2"),
        ("b.tsv.gz line 2", {"id": "t1", "text": "tab, separated"}, None),
    ]
    assert count_rows(files.paths) == 4


def test_a_csv_row_that_is_not_utf8_becomes_an_error_row_and_the_rest_are_read(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\na,caf\xe9\nb,fine\n")
    rows = list(open_input(str(path)).rows())
    assert rows == [
        RawRow("in.csv line 2", None, "in.csv line 2 is not valid UTF-8"),
        RawRow("in.csv line 3", {"id": "b", "text": "fine"}),
    ]


def test_done_csv_rows_come_as_one_block_of_ids(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,text\n" + "".join(f"r{i},t{i}\n" for i in range(10)))
    items = list(open_input(str(path)).rows_or_done(None, lambda _: True))
    assert items == [DoneRows("in.csv", "line", 2, [f"r{i}" for i in range(10)])]
    pending = list(open_input(str(path)).rows_or_done(None, lambda ids: "r3" not in ids))
    assert [r.data["id"] for r in pending if isinstance(r, RawRow) and r.data] == [
        f"r{i}" for i in range(10)
    ]


def test_an_empty_csv_is_refused(tmp_path):
    (tmp_path / "in.csv").write_text("")
    with pytest.raises(JobError, match=r"in\.csv is empty: it has no header line"):
        open_input(str(tmp_path / "in.csv"))


def test_a_csv_job_runs_end_to_end_and_resumes(tmp_path, server):
    path = tmp_path / "in.csv"
    rows = prompt_rows(6)
    path.write_text("id,prompt\n" + "".join(f"{r['id']},{r['prompt']}\n" for r in rows))
    path.write_text(path.read_text() + "oops,too,many\n")
    out = tmp_path / "out"
    proc = run_against(server, "-i", str(path), "-o", str(out), "-q", expect=1)
    assert "1 rows failed (invalid_input 1)" in proc.stderr
    table = zbatch.read_results(out).to_pylist()
    assert {r["id"]: r["content"] for r in table if r["status"] == "ok"} == {
        r["id"]: asked(r["prompt"]) for r in rows
    }
    (failed,) = [r for r in table if r["status"] == "failed"]
    assert failed["message"] == "in.csv line 8 has 3 fields, the header has 2"
    run_against(server, "-i", str(path), "-o", str(out), "-q", expect=0)
    assert server.stats()["requests"] == 6


def test_csv_input_in_object_storage(s3: S3, tmp_path, server):
    s3.fs().pipe(f"{s3.bucket}/in/rows.csv.gz", gzip.compress(b"id,prompt\nx1,first\nx2,second\n"))
    job = zbatch.Job(
        input_path=s3.url("in/rows.csv.gz"),
        output_dir=str(tmp_path / "o"),
        base_url=server.base_url,
    )
    assert zbatch.run(job, api_key="k").exit_code == 0
    results = zbatch.read_results(job.output_dir).to_pylist()
    assert [(r["id"], r["content"]) for r in results] == [
        ("x1", asked("first")),
        ("x2", asked("second")),
    ]


# --- the column check -----------------------------------------------------------------------


def test_a_template_column_that_starts_on_row_two_is_not_refused(tmp_path, server):
    rows = [{"id": "a", "text": "t"}, {"id": "b", "text": "u", "topic": "x"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    job = zbatch.Job(
        input_path=str(path),
        output_dir=str(tmp_path / "o"),
        base_url=server.base_url,
        template="{text} {topic}",
    )
    result = zbatch.run(job, api_key="k")
    assert (result.stats.ok, result.stats.errors) == (1, {"template_error": 1})
    (ok,) = [r for r in zbatch.read_results(job.output_dir).to_pylist() if r["status"] == "ok"]
    assert (ok["id"], ok["content"]) == ("b", asked("u x"))


def test_a_template_column_missing_from_every_peeked_row_is_refused_before_sending(
    tmp_path, server
):
    path = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    proc = run_against(
        server, "-i", str(path), "-o", str(tmp_path / "o"), "--template", "{topic}", expect=2
    )
    assert proc.stderr == (
        f"Error: {path}: the job needs column(s) 'topic' that the input lacks (it has: id, "
        "prompt). Fix the template/columns or the input; nothing was sent\n"
    )
    assert server.stats()["requests"] == 0


# --- export in input order ------------------------------------------------------------------


def shuffled_outdir(
    tmp_path: Path, server: ZaiServer, suffix: str
) -> tuple[Path, list[str], dict[str, str]]:
    """An OUTDIR whose rows were committed out of input order: odd rows first, then the rest,
    plus an error row and an id that is no longer in the input."""
    rows = prompt_rows(9)
    rows[4]["prompt"] = ""  # a template_error
    out = tmp_path / "out"
    gone = write_jsonl(tmp_path / "gone.jsonl", [{"id": "zz-gone", "prompt": "old"}])
    run_against(server, "-i", str(gone), "-o", str(out), "-q")
    odd = write_jsonl(tmp_path / "odd.jsonl", rows[1::2])
    run_against(server, "-i", str(odd), "-o", str(out), "-q", "--part-rows", "1")
    if suffix == "parquet":
        path = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = write_jsonl(tmp_path / "in.jsonl", rows)
    run_against(server, "-i", str(path), "-o", str(out), "-q", expect=1)
    prompts = {row["id"]: row["prompt"] for row in rows} | {"zz-gone": "old"}
    return out, [row["id"] for row in rows], prompts


@pytest.mark.parametrize("target", ["all.jsonl", "all.csv", "all.parquet"])
def test_export_writes_rows_in_input_order_then_ids_no_longer_in_it(tmp_path, server, target):
    out, ids, prompts = shuffled_outdir(tmp_path, server, "jsonl")
    proc = run_zbatch("export", str(out), "-o", str(tmp_path / target))
    assert proc.returncode == 0 and proc.stderr == ""
    exported = read_export(tmp_path / target)
    assert [row["id"] for row in exported] == [*ids, "zz-gone"]
    assert [row["status"] for row in exported] == ["ok"] * 4 + ["failed"] + ["ok"] * 5
    for row in exported:
        if row["status"] == "ok":
            assert row["content"] == asked(prompts[row["id"]])


def test_read_results_is_in_input_order_for_parquet_input(tmp_path, server):
    out, ids, _ = shuffled_outdir(tmp_path, server, "parquet")
    table = zbatch.read_results(out)
    assert table.column("id").to_pylist() == [*ids, "zz-gone"]


def test_export_over_many_windows_keeps_input_order(tmp_path, server, monkeypatch):
    import zbatch.results.outcomes

    monkeypatch.setattr(zbatch.results.outcomes, "WINDOW_ROWS", 3)
    out, ids, prompts = shuffled_outdir(tmp_path, server, "jsonl")
    table = zbatch.read_results(out).to_pylist()
    assert [row["id"] for row in table] == [*ids, "zz-gone"]
    ok = [row for row in table if row["status"] == "ok"]
    assert len(ok) == 9 and all(row["content"] == asked(prompts[row["id"]]) for row in ok)


def test_export_of_an_outdir_whose_input_is_gone_is_in_commit_order_with_a_note(tmp_path, server):
    out, _, _ = shuffled_outdir(tmp_path, server, "jsonl")
    (tmp_path / "in.jsonl").unlink()
    proc = run_zbatch("export", str(out), "-o", "-")
    assert proc.returncode == 0
    assert proc.stderr.splitlines()[-1] == (
        f"Note: rows in commit order, keep columns as stored: input file "
        f"{tmp_path / 'in.jsonl'} does not exist"
    )
    ids = [json.loads(line)["id"] for line in proc.stdout.splitlines()]
    assert ids[:1] == ["zz-gone"] and len(ids) == 10


# --- keep columns ---------------------------------------------------------------------------


def keep_rows() -> list[dict[str, Any]]:
    return [{**row, "n": i, "tag": f"t{i}"} for i, row in enumerate(prompt_rows(4))]


def test_adding_a_keep_column_sends_nothing_again_and_fills_earlier_rows_from_the_input(
    tmp_path, server
):
    path = write_jsonl(tmp_path / "in.jsonl", keep_rows())
    out = tmp_path / "out"
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--limit", "2")
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "n")
    assert server.stats()["requests"] == 4  # the first two were not bought again
    table = zbatch.read_results(out).to_pylist()
    assert [(r["id"], r["n"], r["content"]) for r in table] == [
        (row["id"], row["n"], asked(row["prompt"])) for row in keep_rows()
    ]
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "tag")
    assert server.stats()["requests"] == 4
    exported = read_export_of(out, tmp_path / "all.parquet")
    assert [(r["n"], r["tag"]) for r in exported] == [(i, f"t{i}") for i in range(4)]


def read_export_of(out: Path, target: Path) -> list[dict[str, Any]]:
    assert run_zbatch("export", str(out), "-o", str(target)).returncode == 0
    return read_export(target)


def test_an_outdir_whose_job_json_fingerprint_includes_keep_columns_is_resumed(tmp_path, server):
    """job.json as versions before this one wrote it: keep_columns inside the fingerprint."""
    path = write_jsonl(tmp_path / "in.jsonl", keep_rows())
    out = tmp_path / "out"
    run_against(
        server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "n", "--limit", "2"
    )
    job = zbatch.Job(input_path=str(path), output_dir=str(out), keep_columns=("n",))
    record = json.loads((out / "job.json").read_text())
    old = job.fingerprints()[1]
    assert old != job.fingerprint()
    record["fingerprint"] = old
    record["request"]["keep_columns"] = ["n"]
    (out / "job.json").write_text(json.dumps(record))
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "n")
    assert server.stats()["requests"] == 4
    proc = run_zbatch("run", "-i", str(path), "-o", str(out), "--keep-columns", "n", "--dry-run")
    assert proc.returncode == 0 and "0 to send" in proc.stdout


def test_an_old_outdir_takes_a_changed_keep_list_when_its_job_json_records_the_request(
    tmp_path, server
):
    path = write_jsonl(tmp_path / "in.jsonl", keep_rows())
    out = tmp_path / "out"
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "n")
    record = json.loads((out / "job.json").read_text())
    job = zbatch.Job(input_path=str(path), output_dir=str(out), keep_columns=("n",))
    record["fingerprint"] = job.fingerprints()[1]  # as versions before this one wrote it
    record["request"]["keep_columns"] = ["n"]
    (out / "job.json").write_text(json.dumps(record))
    proc = run_zbatch("run", "-i", str(path), "-o", str(out), "--keep-columns", "tag", "--dry-run")
    assert proc.returncode == 0 and "0 to send" in proc.stdout
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "tag")
    assert server.stats()["requests"] == 4
    table = zbatch.read_results(out).to_pylist()
    assert [(r["n"], r["tag"]) for r in table] == [(i, f"t{i}") for i in range(4)]


def test_a_request_change_is_still_refused_on_an_old_outdir(tmp_path, server):
    path = write_jsonl(tmp_path / "in.jsonl", keep_rows())
    out = tmp_path / "out"
    run_against(server, "-i", str(path), "-o", str(out), "-q", "--keep-columns", "n")
    proc = run_against(server, "-i", str(path), "-o", str(out), "--system", "Be terse.", expect=2)
    assert proc.stderr == (
        f"Error: {out} holds results of a different request (system changed). Use a new "
        "output directory, or --force to start a new generation of results here\n"
    )
