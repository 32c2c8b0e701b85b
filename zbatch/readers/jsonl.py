"""JSONL input (plain or gzip): one JSON object per line, read line by line.

On resume, a block of lines whose ids are all done is parsed by Arrow for its ids alone
(:class:`_JsonlIds`); any block Arrow would read differently from Python's ``json`` is read
row by row.
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.json as pa_json

from ..errors import JobError
from . import base
from .base import READ_ERRORS, DoneRows, InputPath, RawRow, is_utf8, open_text

# The column check looks at the union of the keys of this many first rows of a JSONL file (a
# column may start on a later row; CSV has its header, Parquet its schema).
PEEK_ROWS = 100


def first_records(path: InputPath) -> tuple[dict[str, Any], set[str]]:
    """The first JSON object of a JSONL file and the union of the keys of its first
    ``PEEK_ROWS`` rows (a column may start on a later row); JobError if the file is unusable."""
    lines = 0
    first: dict[str, Any] | None = None
    names: set[str] = set()
    try:
        for row in itertools.islice(read_jsonl(path), PEEK_ROWS):
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


def read_jsonl(path: InputPath) -> Iterator[RawRow]:
    with open_text(path) as handle:
        for number, line in jsonl_lines(handle):
            yield _jsonl_row(path.name, number, line)


def jsonl_lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for each line that is not blank; None for one over the limit."""
    number = 0
    while True:
        line = handle.readline(base.MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]  # Windows editors start UTF-8 files with one
        if len(line) > base.MAX_LINE_BYTES and not line.endswith(b"\n"):
            _skip_rest_of_line(handle)
            yield number, None
        elif line.strip():
            yield number, line


def _jsonl_row(name: str, number: int, line: bytes | None) -> RawRow:
    where = f"{name} line {number}"
    if line is None:
        limit = base.MAX_LINE_BYTES // (1024 * 1024)
        return RawRow(where, None, f"{where} is longer than {limit} MB; skipped")
    return _parse_line(line, where)


def _skip_rest_of_line(handle: IO[bytes]) -> None:
    while True:
        chunk = handle.readline(base.MAX_LINE_BYTES)
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


def read_jsonl_skipping_done(
    path: InputPath, id_column: str | None, all_done: Callable[[list[str]], bool]
) -> Iterator[RawRow | DoneRows]:
    block_ids = _JsonlIds(id_column)
    with open_text(path) as handle:
        lines = jsonl_lines(handle)
        while block := list(itertools.islice(lines, base.BLOCK_ROWS)):
            ids = block_ids.read(block)
            if ids is not None and all_done(ids):
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
        if b"\xef\xbb\xbf" in data or not (data.isascii() or is_utf8(data)):
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
            batch_lines = table.num_rows - table.column("body").null_count
            if batch_lines not in (0, table.num_rows):
                return None  # batch lines among prompt rows: row by row
            ids = table.column("custom_id" if batch_lines else "id")
        if ids.null_count:
            return None  # a batch line without custom_id, or no id: row by row, to be logged
        values = ids.to_pylist()
        return values if ids.type == pa.string() else [str(value) for value in values]
