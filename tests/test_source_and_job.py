"""Reading the input (JSONL, .jsonl.gz, Parquet, folders) and loading the job settings."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import zbatch.readers.base
import zbatch.readers.parquet
from zbatch.errors import JobError
from zbatch.job import DEFAULT_BASE_URL, DEFAULT_MODEL, Job
from zbatch.job.file import load_job
from zbatch.source import DoneRows, RawRow, count_rows, open_input, read_file


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def data_of(rows: list[RawRow]) -> list[dict[str, Any] | None]:
    return [row.data for row in rows]


# --- reading files --------------------------------------------------------------------------


def test_jsonl_rows_are_read_in_order_with_their_line_numbers(tmp_path):
    path = jsonl(tmp_path / "reviews.jsonl", [{"id": 1, "text": "héllo"}, {"id": 2, "text": "b"}])
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": 1, "text": "héllo"}, {"id": 2, "text": "b"}]
    assert [r.where for r in rows] == ["reviews.jsonl line 1", "reviews.jsonl line 2"]
    assert all(r.problem is None for r in rows)


def test_blank_lines_are_skipped_but_still_counted_for_line_numbers(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": 1}\n\n   \n{"id": 2}')  # no newline at the end
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": 1}, {"id": 2}]
    assert rows[1].where == "a.jsonl line 4"


def test_gzipped_jsonl_is_read_like_plain_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"id": "g1", "prompt": "one"}\n{"id": "g2", "prompt": "two"}\n')
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": "g1", "prompt": "one"}, {"id": "g2", "prompt": "two"}]
    assert rows[1].where == "rows.jsonl.gz line 2"


def test_parquet_rows_are_read_in_order_with_their_row_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(zbatch.readers.parquet, "PARQUET_BATCH_ROWS", 2)  # several batches
    path = tmp_path / "news.parquet"
    pq.write_table(pa.table({"id": ["n0", "n1", "n2"], "stars": [5, None, 3]}), path)
    rows = list(read_file(path))
    assert data_of(rows) == [
        {"id": "n0", "stars": 5},
        {"id": "n1", "stars": None},
        {"id": "n2", "stars": 3},
    ]
    assert [r.where for r in rows] == [
        "news.parquet row 0",
        "news.parquet row 1",
        "news.parquet row 2",
    ]


def describe(items: list[Any]) -> list[tuple[str, Any]]:
    """("done", [ids]) for a DoneRows, ("row", where) for a RawRow."""
    return [
        ("done", (item.where(0), item.ids)) if isinstance(item, DoneRows) else ("row", item.where)
        for item in items
    ]


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_blocks_whose_ids_are_all_done_come_as_ids_only(tmp_path, monkeypatch, kind):
    """Parquet batches and blocks of JSONL lines alike (their size set to 3 here)."""
    ids = ["a", "b", "c", "d", " e", "f", "g", None, "h", "i"]
    rows = [{"id": i, "text": f"t{n}"} for n, i in enumerate(ids)]
    if kind == "parquet":
        monkeypatch.setattr(zbatch.readers.parquet, "PARQUET_BATCH_ROWS", 3)
        path = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        where = [f"in.parquet row {n}" for n in range(10)]
    else:
        monkeypatch.setattr(zbatch.readers.base, "BLOCK_ROWS", 3)
        path = jsonl(tmp_path / "in.jsonl", rows)
        where = [f"in.jsonl line {n + 1}" for n in range(10)]
    done = {"a", "b", "c", "d", "e", "f", "g", "h", "i"}  # " e" is done as "e", once stripped
    items = list(open_input(str(path)).rows_or_done(None, done.__contains__))
    assert describe(items) == [
        ("done", (where[0], ["a", "b", "c"])),
        ("row", where[3]),  # " e" needs normalising: row by row
        ("row", where[4]),
        ("row", where[5]),
        ("row", where[6]),  # a missing id: row by row, to be logged
        ("row", where[7]),
        ("row", where[8]),
        ("done", (where[9], ["i"])),
    ]
    assert items[1].data == {"id": "d", "text": "t3"}  # RawRows carry the whole row


def test_integer_ids_are_checked_as_text_and_batch_lines_are_read_row_by_row(tmp_path):
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3]}), numbers)
    items = list(open_input(str(numbers)).rows_or_done(None, {"1", "2", "3"}.__contains__))
    assert describe(items) == [("done", ("numbers.parquet row 0", ["1", "2", "3"]))]

    batch = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"custom_id": ["x"], "id": ["x"], "body": ["{}"]}), batch)
    items = list(open_input(str(batch)).rows_or_done(None, {"x"}.__contains__))
    assert describe(items) == [("row", "batch.parquet row 0")]

    named = list(open_input(str(batch)).rows_or_done("custom_id", {"x"}.__contains__))
    assert describe(named) == [("done", ("batch.parquet row 0", ["x"]))]


def test_jsonl_ids_follow_the_same_rules_as_reading_row_by_row(tmp_path, monkeypatch):
    """Every id a DoneRows gives is the one prompt.row_id reads from that very line."""
    from zbatch.prompt import row_id

    monkeypatch.setattr(zbatch.readers.base, "BLOCK_ROWS", 2)
    blocks = [
        b'{"id": "a1", "x": [1, {"y": null}]}\n{"id": "a2", "x": NaN}\n',  # ids as they are
        b'{"id": 17, "x": 1}\n{"id": -3}\n',  # integers, checked as text
        b'{"custom_id": "c1", "id": "no", "body": {"model": "m"}}\n'
        b'{"custom_id": "c2", "body": {}}\n',  # batch lines: custom_id
        b'{"custom_id": "u1", "id": "i1", "body": null}\n{"id": "i2", "custom_id": "u2"}\n',
        b'{"custom_id": "u3", "id": "i3", "body": "text"}\n{"id": "i4"}\n',  # body not an object
        b'{"id": "b1"}\n{"id": 2}\n',  # mixed id types
        b'{"id": 1.5}\n{"id": "b4"}\n',  # a number that is not an integer
        b'{"id": true}\n{"id": "b6"}\n',  # a boolean is no id
        b'{"id": "b7", "id": "b8"}\n{"id": "b9"}\n',  # a repeated key: Python keeps the last
        b'{"id": "c3", "body": {}}\n{"id": "c4"}\n',  # a batch body without custom_id
        b'{"id": "d1"}{"id": "d2"}\n{"id": "d3"}\n',  # two objects on one line
        b'\xef\xbb\xbf{"id": "e1"}\n{"id": "e2"}\n',  # a byte-order mark
        b'{"id": "f1", "x": "\xff"}\n{"id": "f2"}\n',  # bad UTF-8 in another column
        b'{"id": "g1"}\n\n{"id": "g0"}\n',  # a blank line
        b'{"id": "g2"}\n["g3"]\n',  # not an object
        b'{"id": "h1", "x": "\xc3\xa9"}\n{"id": "h2"}',  # UTF-8, and no newline at the end
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(blocks))
    items = list(open_input(str(path)).rows_or_done(None, lambda _: True))
    expected = {}
    for row in read_file(path):
        expected[row.where] = row_id(row.data, None) if row.data is not None else None
    done = [item for item in items if isinstance(item, DoneRows)]
    for item in done:
        for offset, got in enumerate(item.ids):
            assert got == expected[item.where(offset)], item.where(offset)
    assert [item.ids for item in done] == [
        ["a1", "a2"],
        ["17", "-3"],
        ["c1", "c2"],
        ["i1", "i2"],
        ["h1", "h2"],
    ]
    seen = [w for item in done for w in map(item.where, range(len(item.ids)))]
    seen += [item.where for item in items if isinstance(item, RawRow)]
    assert sorted(seen) == sorted(expected)  # every line once, blank ones aside


def test_jsonl_named_id_columns_and_gzip_are_read_as_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(zbatch.readers.base, "MAX_LINE_BYTES", 64)
    path = tmp_path / "named.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"key": "k1", "id": 5}\n{"key": "k2"}\n')
        handle.write(b'{"key": "k3", "text": "' + b"x" * 80 + b'"}\n')  # over the limit
    items = list(open_input(str(path)).rows_or_done("key", lambda _: True))
    assert describe(items) == [
        ("row", "named.jsonl.gz line 1"),
        ("row", "named.jsonl.gz line 2"),
        ("row", "named.jsonl.gz line 3"),
    ]
    assert items[2].problem == "named.jsonl.gz line 3 is longer than 0 MB; skipped"
    monkeypatch.setattr(zbatch.readers.base, "BLOCK_ROWS", 2)
    items = list(open_input(str(path)).rows_or_done("key", lambda _: True))
    assert describe(items)[0] == ("done", ("named.jsonl.gz line 1", ["k1", "k2"]))


def test_a_folder_of_mixed_files_is_read_file_by_file_in_name_order(tmp_path):
    folder = tmp_path / "input"
    folder.mkdir()
    jsonl(folder / "b.jsonl", [{"id": "b1"}, {"id": "b2"}])
    with gzip.open(folder / "c.jsonl.gz", "wt") as handle:
        handle.write('{"id": "c1"}\n')
    pq.write_table(pa.table({"id": ["a1", "a2"]}), folder / "a.parquet")
    jsonl(folder / "d.ndjson", [{"id": "d1"}])
    (folder / "notes.txt").write_text("ignored")
    (folder / "sub").mkdir()
    files = open_input(str(folder))
    assert [p.name for p in files.paths] == ["a.parquet", "b.jsonl", "c.jsonl.gz", "d.ndjson"]
    assert [r.data["id"] for r in files.rows()] == ["a1", "a2", "b1", "b2", "c1", "d1"]
    assert count_rows(files.paths) == 6


def test_a_glob_selects_matching_files_in_name_order(tmp_path):
    jsonl(tmp_path / "part2.jsonl", [{"id": 2}])
    jsonl(tmp_path / "part1.jsonl", [{"id": 1}])
    jsonl(tmp_path / "other.jsonl", [{"id": 0}])
    files = open_input(str(tmp_path / "part*.jsonl"))
    assert [r.data["id"] for r in files.rows()] == [1, 2]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"id": 1, "text": "unclosed', "is not valid JSON"),
        (b'{"id": "\xff\xfe"}', "is not valid UTF-8"),
        (b"[1, 2, 3]", "is a JSON list, not an object"),
        (b'"just a string"', "is a JSON str, not an object"),
        (b"42", "is a JSON int, not an object"),
    ],
)
def test_a_bad_line_becomes_a_row_with_a_problem_naming_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "ok1"}\n' + line + b'\n{"id": "ok3"}\n')
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": "ok1"}, None, {"id": "ok3"}]  # reading goes on
    bad = rows[1]
    assert bad.where == "data.jsonl line 2"
    assert bad.problem is not None
    assert bad.problem.startswith("data.jsonl line 2 ")
    assert problem in bad.problem


def test_a_deeply_nested_line_is_a_row_problem_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    [row] = list(read_file(path))
    assert row.data is None
    assert row.problem is not None
    assert row.problem.startswith("deep.jsonl line 1")


def test_a_line_longer_than_the_limit_is_skipped_with_a_problem_and_reading_goes_on(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(zbatch.readers.base, "MAX_LINE_BYTES", 64)
    path = tmp_path / "big.jsonl"
    huge = json.dumps({"id": "huge", "text": "x" * 1000}).encode()
    exactly = json.dumps({"id": "fits", "t": "y" * 41}).encode()
    assert len(exactly) == 64
    path.write_bytes(b'{"id": "a"}\n' + huge + b"\n" + exactly + b"\n" + b'{"id": "b"}\n')
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": "a"}, None, {"id": "fits", "t": "y" * 41}, {"id": "b"}]
    assert rows[1].where == "big.jsonl line 2"
    assert rows[1].problem is not None
    assert rows[1].problem.startswith("big.jsonl line 2 is longer than")
    assert rows[3].where == "big.jsonl line 4"  # the rest of the long line was not a new line


def test_a_long_last_line_without_a_newline_is_skipped_too(tmp_path, monkeypatch):
    monkeypatch.setattr(zbatch.readers.base, "MAX_LINE_BYTES", 32)
    path = tmp_path / "tail.jsonl"
    path.write_bytes(b'{"id": "a"}\n' + json.dumps({"id": "z" * 100}).encode())
    rows = list(read_file(path))
    assert data_of(rows) == [{"id": "a"}, None]
    assert "tail.jsonl line 2" in rows[1].problem


# --- open_input -----------------------------------------------------------------------------


def test_open_input_reports_the_union_of_the_first_jsonl_rows_columns(tmp_path):
    rows = [{"id": 1, "prompt": "p"}, {"id": 2, "other": 1}]
    rows += [{"id": n} for n in range(3, 101)] + [{"id": 101, "late": 1}]
    path = jsonl(tmp_path / "in.jsonl", rows)
    files = open_input(str(path))
    assert files.paths == (path,)
    assert files.columns == frozenset({"id", "prompt", "other"})  # row 101 is past the peek
    assert files.first_is_batch_line is False
    assert files.arrow_types() == {}


def test_open_input_skips_bad_first_lines_when_peeking_at_the_columns(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"not json\n" + json.dumps({"id": 1, "text": "t"}).encode() + b"\n")
    assert open_input(str(path)).columns == frozenset({"id", "text"})


def test_open_input_recognises_batch_format_lines(tmp_path):
    line = {"custom_id": "r1", "method": "POST", "body": {"messages": []}}
    files = open_input(str(jsonl(tmp_path / "batch.jsonl", [line])))
    assert files.first_is_batch_line is True


def test_open_input_reads_parquet_columns_and_types_from_the_schema(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a"], "stars": pa.array([4], pa.int32())}), path)
    files = open_input(str(path))
    assert files.columns == frozenset({"id", "stars"})
    assert files.arrow_types() == {"id": pa.string(), "stars": pa.int32()}


def test_a_bad_parquet_file_in_a_folder_is_a_job_error_naming_it(tmp_path):
    jsonl(tmp_path / "a.jsonl", [{"id": 1}])
    (tmp_path / "b.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(JobError, match=r"b\.parquet"):
        open_input(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("fake.parquet", b'{"id": 1}\n', "fake.parquet is not a readable Parquet file"),
        ("empty.parquet", b"", "empty.parquet"),
        ("empty.jsonl", b"", "empty.jsonl is empty"),
        ("empty.ndjson", b"", "empty.ndjson is empty"),
        ("broken.jsonl.gz", b"this is not gzip data", "broken.jsonl.gz"),
        (
            "table.jsonl",
            b"id,prompt\n1,hello\n",
            "table.jsonl: the first lines are not JSON objects",
        ),
    ],
)
def test_an_unreadable_input_file_is_a_job_error_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(JobError, match=re.escape(message)):
        open_input(str(path))


def test_a_missing_file_is_a_job_error_naming_it(tmp_path):
    with pytest.raises(JobError, match=r"nope\.jsonl does not exist"):
        open_input(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("name", ["rows.xlsx", "rows.json", "rows.parquet.bak"])
def test_an_unsupported_suffix_is_a_job_error_naming_the_file_and_the_choices(tmp_path, name):
    (tmp_path / name).write_text("{}\n")
    with pytest.raises(JobError) as caught:
        open_input(str(tmp_path / name))
    message = str(caught.value)
    assert name in message
    assert "unsupported type" in message
    assert ".jsonl.gz" in message


def test_a_folder_without_input_files_is_a_job_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(JobError, match="holds no"):
        open_input(str(tmp_path))


def test_a_glob_that_matches_nothing_is_a_job_error(tmp_path):
    with pytest.raises(JobError, match="matches no"):
        open_input(str(tmp_path / "*.jsonl"))


# --- count_rows -----------------------------------------------------------------------------


def test_count_rows_counts_lines_including_a_last_line_without_newline(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3}')
    b = tmp_path / "b.jsonl.gz"
    with gzip.open(b, "wb") as handle:
        handle.write(b'{"id": 4}\n{"id": 5}\n')
    c = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": list(range(7))}), c)
    empty = tmp_path / "d.jsonl"
    empty.write_bytes(b"")
    assert count_rows((a,)) == 3
    assert count_rows((b,)) == 2
    assert count_rows((c,)) == 7
    assert count_rows((empty,)) == 0
    assert count_rows((a, b, c, empty)) == 12


# --- load_job -------------------------------------------------------------------------------


def write_job(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def with_setting(text: str, table: str, line: str) -> str:
    """A job file's text with one more setting in [table] (added if the table is absent)."""
    if f"[{table}]" in text:
        return text.replace(f"[{table}]", f"[{table}]\n{line}", 1)
    return text + f"\n[{table}]\n{line}\n"


BASIC = """
[input]
path = "data/rows.jsonl"
keep_columns = ["lang"]

[request]
template = "Review: {text}"
temperature = 0

[output]
dir = "../out/run1"
"""


def test_relative_paths_in_a_job_file_are_relative_to_the_job_file(tmp_path, monkeypatch):
    job_file = write_job(tmp_path / "jobs" / "sentiment.toml", BASIC)
    monkeypatch.chdir(tmp_path)  # somewhere else than the job file's folder
    job = load_job(job_file, {})
    assert job.input_path == str((tmp_path / "jobs" / "data" / "rows.jsonl").resolve())
    assert job.output_dir == str((tmp_path / "out" / "run1").resolve())


def test_values_from_the_job_file_are_typed(tmp_path):
    job = load_job(write_job(tmp_path / "j.toml", BASIC), {})
    assert job.template == "Review: {text}"
    assert job.temperature == 0.0
    assert isinstance(job.temperature, float)  # an integer in TOML is a float setting
    assert job.keep_columns == ("lang",)
    assert job.force_model is False
    assert job.effective_model == DEFAULT_MODEL


def test_flags_override_the_job_file(tmp_path):
    job = load_job(
        write_job(tmp_path / "j.toml", BASIC + "\n[limits]\nconcurrency = 4\n"),
        {"concurrency": 32, "temperature": 0.7, "template": None},
    )
    assert job.concurrency == 32
    assert job.temperature == 0.7
    assert job.template == "Review: {text}"  # a flag that was not given (None) changes nothing


def test_flag_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    job_file = write_job(tmp_path / "jobs" / "j.toml", BASIC)
    monkeypatch.chdir(tmp_path)
    job = load_job(job_file, {"input_path": "other.jsonl", "output_dir": "o"})
    assert job.input_path == str(tmp_path.resolve() / "other.jsonl")
    assert job.output_dir == str(tmp_path.resolve() / "o")


def test_a_job_from_flags_only_needs_input_and_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZAI_BASE_URL", raising=False)
    job = load_job(None, {"input_path": "in.jsonl", "output_dir": "out"})
    assert job.base_url == DEFAULT_BASE_URL
    with pytest.raises(JobError, match=r"input\.path is not set"):
        load_job(None, {"output_dir": "out"})
    with pytest.raises(JobError, match=r"output\.dir is not set"):
        load_job(None, {"input_path": "in.jsonl"})


def test_the_base_url_comes_from_zai_base_url_when_not_set(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAI_BASE_URL", "http://127.0.0.1:9/v4")
    assert load_job(write_job(tmp_path / "j.toml", BASIC), {}).base_url == "http://127.0.0.1:9/v4"
    text = BASIC + '\n[endpoint]\nbase_url = "https://example.test/v1"\n'
    assert load_job(write_job(tmp_path / "k.toml", text), {}).base_url == "https://example.test/v1"


def test_a_model_given_as_a_flag_sets_force_model(tmp_path):
    job_file = write_job(tmp_path / "j.toml", BASIC + "\n[limits]\nrpm = 60\n")
    assert load_job(job_file, {}).force_model is False
    in_file = write_job(
        tmp_path / "m.toml", BASIC.replace("[request]", '[request]\nmodel = "glm-4.5"')
    )
    assert load_job(in_file, {}).force_model is False
    job = load_job(job_file, {"model": "glm-4.7"})
    assert (job.model, job.force_model) == ("glm-4.7", True)


def test_an_unknown_table_is_an_error_naming_it(tmp_path):
    job_file = write_job(tmp_path / "j.toml", BASIC + "\n[requests]\nmodel = 'x'\n")
    with pytest.raises(JobError, match=r"unknown table \[requests\]"):
        load_job(job_file, {})


def test_an_unknown_key_is_an_error_naming_the_key_and_the_table(tmp_path):
    job_file = write_job(tmp_path / "j.toml", BASIC.replace("temperature = 0", "temprature = 0"))
    with pytest.raises(JobError) as caught:
        load_job(job_file, {})
    message = str(caught.value)
    assert "unknown key 'temprature' in [request]" in message
    assert "temperature" in message  # the known keys are listed


@pytest.mark.parametrize(
    ("table", "line", "key", "expected"),
    [
        ("limits", 'concurrency = "many"', "limits.concurrency", "a whole number"),
        ("limits", "concurrency = 2.5", "limits.concurrency", "a whole number"),
        ("limits", "concurrency = true", "limits.concurrency", "a whole number"),
        ("limits", 'rpm = "600"', "limits.rpm", "a number"),
        ("request", 'thinking = "yes"', "request.thinking", "true or false"),
        ("request", "system = 3", "request.system", "a string"),
        ("request", 'extra = "x"', "request.extra", "a table"),
        ("labels", "choices = [1, 2]", "labels.choices", "a list of strings"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_key(tmp_path, table, line, key, expected):
    job_file = write_job(tmp_path / "j.toml", with_setting(BASIC, table, line))
    with pytest.raises(JobError, match=rf"{key} must be {expected}"):
        load_job(job_file, {})


def test_a_choices_string_is_split_on_commas(tmp_path):
    text = BASIC + '\n[labels]\nchoices = "positive, negative ,neutral"\n'
    job = load_job(write_job(tmp_path / "j.toml", text), {})
    assert job.choices == ("positive", "negative", "neutral")


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ("limits", "concurrency = 0", "limits.concurrency must be greater than 0"),
        ("limits", "rpm = -1", "limits.rpm must be greater than 0"),
        ("limits", "max_retries = -1", "limits.max_retries must not be negative"),
        ("output", "part_rows = 0", "output.part_rows must be greater than 0"),
        ("endpoint", "timeout = 0", "endpoint.timeout must be greater than 0"),
        (
            "endpoint",
            'schema_form = "grammar"',
            'endpoint.schema_form must be "json_schema" or "json_object" or "system"',
        ),
    ],
)
def test_out_of_range_values_are_errors_naming_the_key(tmp_path, table, line, message):
    text = with_setting(BASIC, table, line)
    with pytest.raises(JobError, match=message):
        load_job(write_job(tmp_path / "j.toml", text), {})


def test_response_format_must_be_json_object_or_text(tmp_path):
    text = BASIC.replace("temperature = 0", 'response_format = "json"')
    with pytest.raises(JobError, match=r"request\.response_format"):
        load_job(write_job(tmp_path / "j.toml", text), {})


def test_template_and_messages_column_together_are_refused(tmp_path):
    text = BASIC.replace("temperature = 0", 'messages_column = "conv"')
    with pytest.raises(JobError, match="not both"):
        load_job(write_job(tmp_path / "j.toml", text), {})


def test_a_missing_job_file_and_invalid_toml_are_job_errors_naming_the_file(tmp_path):
    with pytest.raises(JobError, match=r"missing\.toml does not exist"):
        load_job(tmp_path / "missing.toml", {})
    bad = write_job(tmp_path / "bad.toml", "[input\npath = 1")
    with pytest.raises(JobError, match=r"bad\.toml is not valid TOML"):
        load_job(bad, {})


def test_prices_are_read_as_a_table(tmp_path):
    text = BASIC + '\n[prices]\n"glm-4.6" = { input = 1.0, output = 2.0 }\n'
    job = load_job(write_job(tmp_path / "j.toml", text), {})
    assert job.prices == {"glm-4.6": {"input": 1.0, "output": 2.0}}


def test_to_json_holds_the_key_variable_name_but_never_a_key(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAI_API_KEY", "zk-secret-never-stored")
    job = load_job(write_job(tmp_path / "j.toml", BASIC), {})
    blob = json.dumps(job.to_json())
    assert "zk-secret-never-stored" not in blob
    assert job.to_json()["api_key_env"] == "ZAI_API_KEY"


# --- fingerprint ----------------------------------------------------------------------------


def base_job(**settings: Any) -> Job:
    return Job(input_path="/in.jsonl", output_dir="/out", template="Review: {text}", **settings)


def test_the_fingerprint_is_stable_for_the_same_settings():
    assert base_job().fingerprint() == base_job().fingerprint()
    assert len(base_job().fingerprint()) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"template": "Rate: {text}"},
        {"model": "glm-4.7"},
        {"system": "Be terse."},
        {"temperature": 0.5},
        {"max_tokens": 10},
        {"thinking": False},
        {"response_format": "json_object"},
        {"extra": {"do_sample": False}},
        # this changes the result schema, so it is fingerprinted too
        {"choices": ("yes", "no")},
    ],
)
def test_the_fingerprint_changes_with_a_setting_that_shapes_the_request(change):
    settings = {"template": "Review: {text}", **change}
    changed = Job(input_path="/in.jsonl", output_dir="/out", **settings)
    assert changed.fingerprint() != base_job().fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"concurrency": 2},
        {"rpm": 60.0},
        {"max_retries": 1},
        {"timeout": 5.0},
        {"output_dir": "/elsewhere"},
        {"input_path": "/bigger.jsonl"},
        {"base_url": "http://127.0.0.1:1/v4"},
        # keep columns are taken from the input row: a new one is no new request
        {"keep_columns": ("text",)},
    ],
)
def test_the_fingerprint_ignores_settings_that_do_not_shape_the_request(change):
    settings = {"input_path": "/in.jsonl", "output_dir": "/out", **change}
    assert Job(template="Review: {text}", **settings).fingerprint() == base_job().fingerprint()


def test_the_default_model_and_the_same_model_named_explicitly_share_a_fingerprint():
    assert base_job(model=DEFAULT_MODEL).fingerprint() == base_job().fingerprint()
