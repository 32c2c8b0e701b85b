"""Input from URLs: s3:// (a loopback moto server), file://, and the errors a user can meet."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)

from zbatch import Job
from zbatch.errors import JobError
from zbatch.readers.parquet import PARQUET_BATCH_ROWS
from zbatch.source import (
    DoneRows,
    RawRow,
    count_rows,
    open_input,
    read_file,
)


def _jsonl(ids: list[str]) -> bytes:
    return b"".join(json.dumps({"id": i, "prompt": f"say {i}"}).encode() + b"\n" for i in ids)


def _parquet(ids: list[str], row_group: int = 2) -> bytes:
    sink = io.BytesIO()
    table = pa.table({"id": ids, "prompt": [f"say {i}" for i in ids]})
    pq.write_table(table, sink, row_group_size=row_group)
    return sink.getvalue()


def _rows(files: object) -> list[RawRow]:
    return list(files.rows())  # type: ignore[attr-defined]


def test_jsonl_gzip_and_parquet_objects_read_like_local_files(s3: S3) -> None:
    fs = s3.fs()
    fs.pipe(f"{s3.bucket}/in/a.jsonl", _jsonl(["a1", "a2"]))
    fs.pipe(f"{s3.bucket}/in/b.jsonl.gz", gzip.compress(_jsonl(["b1"])))
    fs.pipe(f"{s3.bucket}/in/c.parquet", _parquet(["c1", "c2", "c3"]))
    fs.pipe(f"{s3.bucket}/in/notes.txt", b"not input")
    files = open_input(s3.url("in"))
    assert [str(p) for p in files.paths] == [
        s3.url("in/a.jsonl"),
        s3.url("in/b.jsonl.gz"),
        s3.url("in/c.parquet"),
    ]
    rows = _rows(files)
    assert [(r.where, r.data) for r in rows] == [
        ("a.jsonl line 1", {"id": "a1", "prompt": "say a1"}),
        ("a.jsonl line 2", {"id": "a2", "prompt": "say a2"}),
        ("b.jsonl.gz line 1", {"id": "b1", "prompt": "say b1"}),
        ("c.parquet row 0", {"id": "c1", "prompt": "say c1"}),
        ("c.parquet row 1", {"id": "c2", "prompt": "say c2"}),
        ("c.parquet row 2", {"id": "c3", "prompt": "say c3"}),
    ]
    assert count_rows(files.paths) == 6
    assert files.columns == {"id", "prompt"}


def test_a_glob_over_s3_takes_the_matching_files_in_name_order(s3: S3) -> None:
    fs = s3.fs()
    for name in ("day-2.jsonl", "day-1.jsonl", "other-1.jsonl"):
        fs.pipe(f"{s3.bucket}/logs/{name}", _jsonl([name]))
    files = open_input(s3.url("logs/day-*.jsonl"))
    assert [r.data["id"] for r in _rows(files) if r.data] == ["day-1.jsonl", "day-2.jsonl"]


def test_rows_or_done_reads_only_the_ids_of_done_parquet_batches_on_s3(s3: S3) -> None:
    ids = [str(n) for n in range(PARQUET_BATCH_ROWS + 2)]
    s3.fs().pipe(f"{s3.bucket}/x.parquet", _parquet(ids, row_group=PARQUET_BATCH_ROWS))
    files = open_input(s3.url("x.parquet"))
    items = list(
        files.rows_or_done("id", lambda ids: all(int(i) < PARQUET_BATCH_ROWS for i in ids))
    )
    assert isinstance(items[0], DoneRows)
    assert items[0].ids == ids[:PARQUET_BATCH_ROWS]
    assert [i.data for i in items[1:]] == [{"id": i, "prompt": f"say {i}"} for i in ids[-2:]]


def test_a_file_url_reads_the_local_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_jsonl(["x"]))
    files = open_input(f"file://{path}")
    assert files.paths == (path,)
    assert [r.data for r in read_file(path)] == [{"id": "x", "prompt": "say x"}]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("missing.jsonl", "input s3://{bucket}/missing.jsonl does not exist"),
        ("notes.txt", "input file s3://{bucket}/notes.txt: unsupported type"),
        ("empty/*.jsonl", "input pattern s3://{bucket}/empty/*.jsonl matches no"),
    ],
)
def test_unusable_s3_inputs_are_job_errors_naming_the_url(s3: S3, key: str, expected: str) -> None:
    s3.fs().pipe(f"{s3.bucket}/notes.txt", b"x")
    with pytest.raises(JobError) as caught:
        open_input(s3.url(key))
    assert expected.format(bucket=s3.bucket) in str(caught.value)


def test_a_missing_bucket_is_a_job_error(s3: S3) -> None:
    with pytest.raises(JobError, match=r"input s3://no-such-bucket-zb/in\.jsonl does not exist"):
        open_input("s3://no-such-bucket-zb/in.jsonl")


def test_without_the_extra_the_error_says_what_to_install(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs now raises ImportError
    with pytest.raises(JobError, match=r"pip install 'zbatch\[s3\]'"):
        open_input(s3.url("in.jsonl"))


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(JobError, match=r"ftp:// is not supported"):
        open_input("ftp://host/in.jsonl")


def test_urls_in_a_job_file_and_in_overrides_are_kept_as_written(tmp_path: Path) -> None:
    """Relative paths are made absolute against the job file; URLs are left alone."""
    job_file = tmp_path / "jobs" / "j.toml"
    job_file.parent.mkdir()
    job_file.write_text('[input]\npath = "s3://labels/in/*.jsonl.gz"\n[output]\ndir = "gs://o/x"\n')
    job = Job.from_toml(job_file)
    assert (job.input_path, job.output_dir) == ("s3://labels/in/*.jsonl.gz", "gs://o/x")
    job = Job.from_toml(job_file, output_dir="file:///srv/out", input_path="in.jsonl")
    assert job.output_dir == "file:///srv/out"
    assert job.input_path == str(Path.cwd() / "in.jsonl")
