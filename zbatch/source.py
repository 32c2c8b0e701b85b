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

import codecs
import contextlib
import csv
import glob
import gzip
import io
import itertools
import json
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from . import urls
from .errors import JobError

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
STDIN = "-"
MAX_LINE_BYTES = 16 * 1024 * 1024
# The column check looks at the union of the keys of this many first rows of a JSONL file (a
# column may start on a later row; CSV has its header, Parquet its schema).
PEEK_ROWS = 100
PARQUET_BATCH_ROWS = 4096
JSONL_BLOCK_LINES = 4096
# What reading a damaged file raises: a truncated or corrupt gzip, a bad Parquet page, EIO.
READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file in object storage, with the few things the readers use of a :class:`Path`."""

    url: str
    fs: Any

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def open(self, mode: str = "rb") -> IO[bytes]:
        handle = self.fs.open(urls.bucket_path(self.url), mode)
        return io.BufferedReader(handle)  # for readline(limit), which fsspec's file lacks


@dataclass(frozen=True, slots=True)
class StdinFile:
    """JSONL read from stdin, spooled to a temp file so that it can be read more than once."""

    spool: Any  # the open temp file: it lives (and is deleted) with this object

    name = "stdin"

    def __str__(self) -> str:
        return "stdin"

    def open(self, mode: str = "rb") -> IO[bytes]:
        return open(self.spool.name, mode)


InputPath = Path | RemoteFile | StdinFile


@dataclass(frozen=True, slots=True)
class RawRow:
    """One input row, or the reason it could not be read."""

    where: str  # "reviews.jsonl line 17" / "news.parquet row 4"
    data: dict[str, Any] | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class DoneRows:
    """Consecutive rows whose ids were all done before: only their ids were read."""

    file: str
    unit: str  # "row" (Parquet) or "line" (JSONL, CSV)
    first: int  # the row or line number of ids[0]
    ids: list[str]

    def where(self, offset: int) -> str:
        return f"{self.file} {self.unit} {self.first + offset}"


_Item = TypeVar("_Item", RawRow, RawRow | DoneRows)


@dataclass(frozen=True, slots=True)
class InputFiles:
    """The input files of a job and the columns the first one shows."""

    paths: tuple[InputPath, ...]
    columns: frozenset[str] | None  # Parquet schema; CSV header; JSONL first rows' keys
    first_is_batch_line: bool

    def rows(self) -> Iterator[RawRow]:
        """Every row of every file, in order; a file that breaks off part-way raises JobError."""
        for path in self.paths:
            yield from _guarded(path, read_file(path))

    def rows_or_done(
        self, id_column: str | None, is_done: Callable[[str], bool]
    ) -> Generator[RawRow | DoneRows, None, None]:
        """Like :meth:`rows`, but a block of rows whose ids are all done comes as one DoneRows.

        Their other columns never become Python objects, so resuming over a million finished
        rows costs a read of their ids, not of every row.
        """
        for path in self.paths:
            if _is_csv(path):
                items = _read_csv_skipping_done(path, id_column, is_done)
            elif not _is_parquet(path):
                items = _read_jsonl_skipping_done(path, id_column, is_done)
            elif (column := _plain_id_column(path, id_column)) is not None:
                items = _read_parquet_skipping_done(path, column, is_done)
            else:
                items = _read_parquet(path)
            yield from _guarded(path, items)

    def arrow_types(self) -> dict[str, pa.DataType]:
        """Column types from the first Parquet file's schema (empty for JSONL)."""
        for path in self.paths:
            if _is_parquet(path):
                schema = _parquet_schema(path)
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
                names = set(_parquet_schema(path).names)
            except (pa.ArrowException, OSError) as exc:
                raise JobError(
                    f"{path} is not a readable Parquet file ({exc}); "
                    "check the file or convert it to JSONL"
                ) from None
        elif _is_csv(path):
            names = set(_csv_header(path))
        else:
            first, names = _first_records(path)
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
                with _parquet_file(path) as reader:
                    total += reader.metadata.num_rows
                continue
            if _is_csv(path):
                with _open_csv(path) as (_, records):
                    total += sum(1 for _ in records)
                continue
            with _open_text(path) as handle:
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
        yield from _read_parquet(path)
    elif _is_csv(path):
        yield from _read_csv(path)
    else:
        yield from _read_jsonl(path)


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


@contextlib.contextmanager
def _open_text(path: InputPath) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


@contextlib.contextmanager
def _parquet_file(path: InputPath) -> Iterator[pq.ParquetFile]:
    """A Parquet reader that reads only what it is asked for (no pre-buffering)."""
    with contextlib.ExitStack() as stack:
        source = path if isinstance(path, Path) else stack.enter_context(path.open("rb"))
        with pq.ParquetFile(source, pre_buffer=False) as reader:
            yield reader


def _parquet_schema(path: InputPath) -> pa.Schema:
    with _parquet_file(path) as reader:
        return reader.schema_arrow


def _first_records(path: InputPath) -> tuple[dict[str, Any], set[str]]:
    """The first JSON object of a JSONL file and the union of the keys of its first
    ``PEEK_ROWS`` rows (a column may start on a later row); JobError if the file is unusable."""
    lines = 0
    first: dict[str, Any] | None = None
    names: set[str] = set()
    try:
        for row in itertools.islice(_read_jsonl(path), PEEK_ROWS):
            lines += 1
            if row.data is not None:
                first = row.data if first is None else first
                names.update(row.data)
            elif first is None and lines == 5:
                break
    except READ_ERRORS as exc:
        raise JobError(f"cannot read {path}: {exc}") from None
    if first is not None:
        return first, names
    if not lines:
        raise JobError(f"input file {path} is empty: it has no rows")
    raise JobError(
        f"{path}: the first lines are not JSON objects; is this a JSONL file "
        "(one JSON object per line)?"
    )


def _read_jsonl(path: InputPath) -> Iterator[RawRow]:
    with _open_text(path) as handle:
        for number, line in _jsonl_lines(handle):
            yield _jsonl_row(path.name, number, line)


def _jsonl_lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for each line that is not blank; None for one over the limit."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]  # Windows editors start UTF-8 files with one
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            _skip_rest_of_line(handle)
            yield number, None
        elif line.strip():
            yield number, line


def _jsonl_row(name: str, number: int, line: bytes | None) -> RawRow:
    where = f"{name} line {number}"
    if line is None:
        limit = MAX_LINE_BYTES // (1024 * 1024)
        return RawRow(where, None, f"{where} is longer than {limit} MB; skipped")
    return _parse_line(line, where)


def _skip_rest_of_line(handle: IO[bytes]) -> None:
    while True:
        chunk = handle.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


def _parse_line(line: bytes, where: str) -> RawRow:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRow(where, None, f"{where} is not valid UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return RawRow(where, None, f"{where} is not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return RawRow(where, None, f"{where} is nested too deeply to read")
    if not isinstance(data, dict):
        return RawRow(where, None, f"{where} is a JSON {type(data).__name__}, not an object")
    return RawRow(where, data)


def _read_jsonl_skipping_done(
    path: InputPath, id_column: str | None, is_done: Callable[[str], bool]
) -> Iterator[RawRow | DoneRows]:
    block_ids = _JsonlIds(id_column)
    with _open_text(path) as handle:
        lines = _jsonl_lines(handle)
        while block := list(itertools.islice(lines, JSONL_BLOCK_LINES)):
            ids = block_ids.read(block)
            if ids is not None and all(map(is_done, ids)):
                yield DoneRows(path.name, "line", block[0][0], ids)
            else:
                for number, line in block:
                    yield _jsonl_row(path.name, number, line)


class _JsonlIds:
    """The ids of a block of JSONL lines, parsed by Arrow without building the rows.

    Only for a block that the row-by-row path would read the same way: consecutive lines,
    each one JSON object whose id is a string or an integer, no line over the limit.
    Anything else (a number that is not an integer, a repeated key, bad UTF-8, a byte-order
    mark, a line holding two objects) gives None and the block is read row by row.
    Arrow does take some lines Python's json refuses, such as ones nested over a thousand
    deep; such a line with a done id counts as done.
    """

    def __init__(self, id_column: str | None) -> None:
        self._column = id_column
        self._id_types = [pa.string(), pa.int64()]  # the one that last worked comes first

    def read(self, block: list[tuple[int, bytes | None]]) -> list[str] | None:
        if block[-1][0] - block[0][0] != len(block) - 1:
            return None  # blank lines in between: the line numbers would not follow on
        lines = [line for _, line in block if line is not None]
        if len(lines) != len(block):
            return None  # a line over the limit
        data = b"".join(lines)
        if b"\xef\xbb\xbf" in data or not (data.isascii() or _is_utf8(data)):
            return None
        for id_type in self._id_types:
            try:
                table = pa_json.read_json(
                    io.BytesIO(data),
                    read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data)),
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=self._schema(id_type), unexpected_field_behavior="ignore"
                    ),
                )
            except pa.ArrowInvalid:
                continue
            if id_type is not self._id_types[0]:
                self._id_types.reverse()
            return self._ids(table) if table.num_rows == len(block) else None
        return None

    def _schema(self, id_type: pa.DataType) -> pa.Schema:
        if self._column is not None:
            return pa.schema([(self._column, id_type)])
        return pa.schema([("id", id_type), ("custom_id", id_type), ("body", pa.struct([]))])

    def _ids(self, table: pa.Table) -> list[str] | None:
        if self._column is not None:
            ids = table.column(self._column)
        else:  # prompt.row_id: a batch line ({"custom_id", "body": {...}}) is known by custom_id
            is_batch_line = pc.is_valid(table.column("body"))
            ids = pc.if_else(is_batch_line, table.column("custom_id"), table.column("id"))
        if ids.null_count:
            return None  # a batch line without custom_id, or no id: row by row, to be logged
        return ids.cast(pa.string()).to_pylist()  # type: ignore[no-any-return]


# A CSV record: its first line number, and its fields or why it cannot be split.
_Record = tuple[int, list[str] | str]


@contextlib.contextmanager
def _open_csv(path: InputPath) -> Iterator[tuple[list[str], Iterator[_Record]]]:
    """The header of a CSV/TSV file and its records.

    Bytes that are not UTF-8 are kept as surrogates for :func:`_csv_row` to report, so one
    bad row does not end the file."""
    csv.field_size_limit(MAX_LINE_BYTES)
    dialect = "excel-tab" if path.name.removesuffix(".gz").endswith(".tsv") else "excel"
    with _open_text(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, dialect)
        header = next(reader, None)
        if header is None:
            raise JobError(f"input file {path} is empty: it has no header line")

        def records() -> Iterator[_Record]:
            while True:
                start = reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # e.g. a field over the size limit
                    yield start, str(exc)
                    continue
                if fields:
                    yield start, fields

        yield header, records()


def _csv_header(path: InputPath) -> list[str]:
    try:
        with _open_csv(path) as (header, _):
            return header
    except (*READ_ERRORS, csv.Error) as exc:
        raise JobError(f"cannot read {path}: {exc}") from None


def _csv_row(name: str, header: list[str], record: _Record) -> RawRow:
    """A CSV record as a row of strings; an empty cell is missing (CSV has no null)."""
    number, fields = record
    where = f"{name} line {number}"
    if isinstance(fields, str):
        return RawRow(where, None, f"{where} is not valid CSV: {fields}")
    if len(fields) != len(header):
        return RawRow(
            where, None, f"{where} has {len(fields)} fields, the header has {len(header)}"
        )
    if not all(map(str.isascii, fields)) and not all(map(_encodes, fields)):
        return RawRow(where, None, f"{where} is not valid UTF-8")
    return RawRow(where, {k: v or None for k, v in zip(header, fields, strict=True)})


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_csv(path: InputPath) -> Iterator[RawRow]:
    with _open_csv(path) as (header, records):
        for record in records:
            yield _csv_row(path.name, header, record)


def _read_csv_skipping_done(
    path: InputPath, id_column: str | None, is_done: Callable[[str], bool]
) -> Iterator[RawRow | DoneRows]:
    """CSV rows, with a block of consecutive done rows as one DoneRows (ids only, no dicts)."""
    with _open_csv(path) as (header, records):
        column = id_column or "id"
        at = header.index(column) if column in header else None
        while block := list(itertools.islice(records, JSONL_BLOCK_LINES)):
            ids = None if at is None else _csv_ids(block, at, len(header))
            if ids is not None and all(map(is_done, ids)):
                yield DoneRows(path.name, "line", block[0][0], ids)
            else:
                for record in block:
                    yield _csv_row(path.name, header, record)


def _csv_ids(block: list[_Record], at: int, width: int) -> list[str] | None:
    """The ids of a block of records, if the row-by-row path would read each the same way:
    one record per line, every record whole, every id present and UTF-8."""
    if block[-1][0] - block[0][0] != len(block) - 1:
        return None
    ids = []
    for _, fields in block:
        if isinstance(fields, str) or len(fields) != width:
            return None
        value = fields[at].strip()
        if not value or not (value.isascii() or _encodes(value)):
            return None
        ids.append(value)
    return ids


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_parquet(path: InputPath) -> Iterator[RawRow]:
    for first, batch in _parquet_batches(path):
        yield from _batch_rows(path.name, first, batch)


def _read_parquet_skipping_done(
    path: InputPath, column: str, is_done: Callable[[str], bool]
) -> Iterator[RawRow | DoneRows]:
    for first, batch in _parquet_batches(path):
        # A done id is stored as prompt.row_id made it; a raw value equal to one needs no
        # normalising, and any other value takes the row-by-row path.
        values = batch.column(column).to_pylist()
        ids = [str(value) for value in values] if None not in values else []
        if ids and all(map(is_done, ids)):
            yield DoneRows(path.name, "row", first, ids)
        else:
            yield from _batch_rows(path.name, first, batch)


def _parquet_batches(path: InputPath) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Each batch of a Parquet file, with the row number of its first row."""
    first = 0
    # One row group at a time, in this thread: -13 MB of peak over the defaults on 1M rows.
    with _parquet_file(path) as reader:
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
            yield first, batch
            first += batch.num_rows


def _batch_rows(name: str, first: int, batch: pa.RecordBatch) -> Iterator[RawRow]:
    for number, data in enumerate(batch.to_pylist(), start=first):
        yield RawRow(f"{name} row {number}", data)


def _plain_id_column(path: InputPath, id_column: str | None) -> str | None:
    """The id column of a Parquet file when its values are ids as they are (strings or
    integers); None when ids need a row's other columns (batch lines) or are of other types."""
    schema = _parquet_schema(path)
    column = id_column or "id"
    if column not in schema.names:
        return None
    if id_column is None and {"custom_id", "body"} <= set(schema.names):
        return None
    kind = schema.field(column).type
    plain = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    return column if plain or pa.types.is_integer(kind) else None
