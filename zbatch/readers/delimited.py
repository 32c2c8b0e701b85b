"""CSV and TSV input (plain or gzip): every value a string, each row named by its line."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
from collections.abc import Callable, Iterator

from ..errors import JobError
from . import base
from .base import READ_ERRORS, DoneRows, InputPath, RawRow, is_utf8, open_text

# A CSV record: its first line number, and its fields or why it cannot be split.
_Record = tuple[int, list[str] | str]


@contextlib.contextmanager
def open_csv(path: InputPath) -> Iterator[tuple[list[str], Iterator[_Record]]]:
    """The header of a CSV/TSV file and its records.

    Bytes that are not UTF-8 are kept as surrogates for :func:`_csv_row` to report, so one
    bad row does not end the file."""
    csv.field_size_limit(base.MAX_LINE_BYTES)
    dialect = "excel-tab" if path.name.removesuffix(".gz").endswith(".tsv") else "excel"
    with open_text(path) as raw:
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


def csv_header(path: InputPath) -> list[str]:
    try:
        with open_csv(path) as (header, _):
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
    if not all(map(str.isascii, fields)) and not all(map(is_utf8, fields)):
        return RawRow(where, None, f"{where} is not valid UTF-8")
    return RawRow(where, {k: v or None for k, v in zip(header, fields, strict=True)})


def read_csv(path: InputPath) -> Iterator[RawRow]:
    with open_csv(path) as (header, records):
        for record in records:
            yield _csv_row(path.name, header, record)


def read_csv_skipping_done(
    path: InputPath, id_column: str | None, all_done: Callable[[list[str]], bool]
) -> Iterator[RawRow | DoneRows]:
    """CSV rows, with a block of consecutive done rows as one DoneRows (ids only, no dicts)."""
    with open_csv(path) as (header, records):
        column = id_column or "id"
        at = header.index(column) if column in header else None
        while block := list(itertools.islice(records, base.BLOCK_ROWS)):
            ids = None if at is None else _csv_ids(block, at, len(header))
            if ids is not None and all_done(ids):
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
        if not value or not (value.isascii() or is_utf8(value)):
            return None
        ids.append(value)
    return ids
