"""Streaming readers for the input: JSONL, CSV, TSV (each plain or gzip), Parquet, a
folder/glob of them, or JSONL on stdin (``-``).

Rows are yielded one at a time; the whole input is never held in memory.
A row that cannot be read (bad JSON, bad UTF-8, a huge line) is yielded with a
``problem`` so it ends in the error log; a file that cannot be read at all
raises :class:`JobError` from :func:`open_input` before anything is sent.

The input may be a local path, a file:// URL, or an s3:// / gs:// URL (a file, a folder of
files, or a glob); files in object storage are streamed in blocks of ``urls.BLOCK_BYTES``
through fsspec (see :mod:`zbatch.urls`), Parquet one row group at a time as locally.

Stdin is copied to a temp file (deleted when the process ends) as it is first opened: a run
counts the rows, peeks at the columns and reads the rows, each a pass over the input, and a
pipe can be read once. A file keeps memory flat whatever the size; buffering in memory would
hold the whole input.
"""

from __future__ import annotations

import csv
import glob
import shutil
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from . import urls
from .errors import JobError
from .readers.base import (
    READ_ERRORS,
    DoneRows,
    InputPath,
    RawRow,
    RemoteFile,
    StdinFile,
    open_text,
)
from .readers.delimited import csv_header, open_csv, read_csv, read_csv_skipping_done
from .readers.jsonl import first_records, read_jsonl, read_jsonl_skipping_done
from .readers.parquet import (
    parquet_file,
    parquet_schema,
    plain_id_column,
    read_parquet,
    read_parquet_skipping_done,
)

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
STDIN = "-"


_Item = TypeVar("_Item", RawRow, RawRow | DoneRows)


@dataclass(frozen=True, slots=True)
class InputFiles:
    """The input files of a job and the columns the first one shows."""

    paths: tuple[InputPath, ...]
    columns: frozenset[str] | None  # Parquet schema; CSV header; JSONL first rows' keys
    first_is_batch_line: bool

    def rows(self) -> Generator[RawRow, None, None]:
        """Every row of every file, in order; a file that breaks off part-way raises JobError."""
        for path in self.paths:
            yield from _guarded(path, read_file(path))

    def rows_or_done(
        self, id_column: str | None, all_done: Callable[[list[str]], bool]
    ) -> Generator[RawRow | DoneRows, None, None]:
        """Like :meth:`rows`, but a block of rows whose ids are all done (``all_done`` is
        asked once a block) comes as one DoneRows.

        Their other columns never become Python objects, so resuming over a million finished
        rows costs a read of their ids, not of every row.
        """
        for path in self.paths:
            if _is_csv(path):
                items = read_csv_skipping_done(path, id_column, all_done)
            elif not _is_parquet(path):
                items = read_jsonl_skipping_done(path, id_column, all_done)
            elif (column := plain_id_column(path, id_column)) is not None:
                items = read_parquet_skipping_done(path, column, all_done)
            else:
                items = read_parquet(path)
            yield from _guarded(path, items)

    def arrow_types(self) -> dict[str, pa.DataType]:
        """Column types from the first Parquet file's schema (empty for JSONL)."""
        for path in self.paths:
            if _is_parquet(path):
                schema = parquet_schema(path)
                return {name: schema.field(name).type for name in schema.names}
        return {}


def open_input(spec: str, *, stdin: bool = False) -> InputFiles:
    """Resolve the input path, check each file can be opened, and peek at the columns.

    ``-`` is stdin when ``stdin`` (a run, a dry run); a reader after the run (status,
    export) is refused with a JobError: what was piped in is gone."""
    if spec == STDIN and not stdin:
        raise JobError("the input was piped in on stdin (-i -): it cannot be read again")
    paths = [_spool_stdin()] if spec == STDIN else _expand(spec)
    columns: set[str] | None = None
    first_is_batch = False
    for index, path in enumerate(paths):
        if _is_parquet(path):
            try:
                names = set(parquet_schema(path).names)
            except (pa.ArrowException, OSError) as exc:
                raise JobError(
                    f"{path} is not a readable Parquet file ({exc}); "
                    "check the file or convert it to JSONL"
                ) from None
        elif _is_csv(path):
            names = set(csv_header(path))
        else:
            first, names = first_records(path)
            if index == 0:
                first_is_batch = is_batch_line(first)
        if index == 0:
            columns = names
    return InputFiles(tuple(paths), frozenset(columns or ()), first_is_batch)


def count_rows(paths: tuple[InputPath, ...]) -> int:
    """Rows in the input, cheaply: Parquet metadata, newlines in JSONL, records in CSV."""
    total = 0
    for path in paths:
        try:
            if _is_parquet(path):
                with parquet_file(path) as reader:
                    total += reader.metadata.num_rows
                continue
            if _is_csv(path):
                with open_csv(path) as (_, records):
                    total += sum(1 for _ in records)
                continue
            with open_text(path) as handle:
                last = b"\n"
                while chunk := handle.read(1 << 20):
                    total += chunk.count(b"\n")
                    last = chunk[-1:]
                total += last != b"\n"
        except (*READ_ERRORS, csv.Error, UnicodeDecodeError) as exc:
            raise JobError(f"cannot read {path} to the end ({exc}); nothing was sent") from None
    return total


def is_batch_line(data: dict[str, Any]) -> bool:
    """True for an OpenAI / Z.AI batch-format line: {"custom_id", "body": {...}}."""
    return "custom_id" in data and isinstance(data.get("body"), dict)


def read_file(path: InputPath) -> Iterator[RawRow]:
    """Rows of one file, by its suffix."""
    if _is_parquet(path):
        yield from read_parquet(path)
    elif _is_csv(path):
        yield from read_csv(path)
    else:
        yield from read_jsonl(path)


def _guarded(path: InputPath, items: Iterator[_Item]) -> Iterator[_Item]:
    """The items of one file; a read error part-way becomes a JobError naming where."""
    read = 0
    try:
        for item in items:
            read += len(item.ids) if isinstance(item, DoneRows) else 1
            yield item
    except READ_ERRORS as exc:
        raise JobError(
            f"{path} cannot be read past its first {read} rows ({exc}); fix or replace "
            "the file, then run the same command to resume"
        ) from None


def _expand(spec: str) -> Sequence[InputPath]:
    urls.check_scheme(spec, "input")
    if urls.is_remote(spec):
        return _expand_remote(spec)
    spec = urls.local_path(spec)
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _supported(p))
        if not found:
            raise JobError(f"input folder {path} holds no {', '.join(SUFFIXES)} files")
        return found
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if _supported(Path(p)))
        if not found:
            raise JobError(f"input pattern {spec} matches no {', '.join(SUFFIXES)} files")
        return found
    if not path.exists():
        raise JobError(f"input file {path} does not exist")
    if not _supported(path):
        raise JobError(f"input file {path}: unsupported type; use {', '.join(SUFFIXES)}")
    return [path]


def _expand_remote(spec: str) -> Sequence[InputPath]:
    """The files an s3:// or gs:// input names: one file, a folder's files, or a glob's."""
    fs = urls.filesystem(spec)
    scheme = spec.partition("://")[0]
    target = urls.bucket_path(spec)
    try:
        if any(ch in target for ch in "*?["):
            found = [p for p in fs.glob(target) if _supported(p)]
            if not found:
                raise JobError(f"input pattern {spec} matches no {', '.join(SUFFIXES)} files")
        elif fs.info(target)["type"] == "directory":
            entries = fs.ls(target, detail=True)
            found = [e["name"] for e in entries if e["type"] == "file" and _supported(e["name"])]
            if not found:
                raise JobError(f"input folder {spec} holds no {', '.join(SUFFIXES)} files")
        elif not _supported(target):
            raise JobError(f"input file {spec}: unsupported type; use {', '.join(SUFFIXES)}")
        else:
            found = [target]
    except urls.backend_errors(fs) as exc:
        raise urls.access_error(spec, "input", exc) from None
    return [RemoteFile(f"{scheme}://{p}", fs) for p in sorted(found)]


def _supported(path: InputPath | str) -> bool:
    return str(path).endswith(SUFFIXES)


def _is_parquet(path: InputPath) -> bool:
    return path.name.endswith(".parquet")


def _is_csv(path: InputPath) -> bool:
    return path.name.removesuffix(".gz").endswith((".csv", ".tsv"))


_stdin_spool: tuple[Any, StdinFile] | None = None


def _spool_stdin() -> StdinFile:
    """stdin copied to a temp file, once per process (for the stdin object it was read from)."""
    global _stdin_spool
    source = sys.stdin.buffer
    if _stdin_spool is not None and _stdin_spool[0] is source:
        return _stdin_spool[1]
    if sys.stdin.isatty():
        raise JobError("input is - (stdin), but stdin is a terminal: pipe JSONL lines in")
    spool = tempfile.NamedTemporaryFile(prefix="zbatch-stdin-", suffix=".jsonl")  # noqa: SIM115
    try:
        shutil.copyfileobj(source, spool, 1 << 20)
        spool.flush()
    except OSError as exc:
        spool.close()
        raise JobError(
            f"cannot copy stdin to {tempfile.gettempdir()} ({exc}); set TMPDIR to a folder "
            "with room, or pass the input as a file"
        ) from None
    _stdin_spool = (source, StdinFile(spool))
    return _stdin_spool[1]
