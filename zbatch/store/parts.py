"""Part files: rows buffered and committed as numbered Parquet parts, and read back in order."""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from .storage import Storage

Row = tuple[Any, ...]
# What cannot be converted to a column's type: a value of the wrong kind, or one out of range.
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)


def _run_of(name: str) -> str:
    """The run (and shard) prefix of a part's name: "part-20261201T130000.123-ab12-00003.parquet"
    -> "part-20261201T130000.123-ab12"."""
    return name.removesuffix(".parquet").removesuffix(".merged").rsplit("-", 1)[0]


def part_name(prefix: str, number: str) -> str:
    """A committed part's name: the run's (and shard's) ``prefix``, then its number in the run."""
    return f"part-{prefix}-{number}.parquet"


def is_part(name: str) -> bool:
    """Committed parts are ``part-*.parquet``; hidden temp files and staging names are not."""
    return name.startswith("part-") and name.endswith(".parquet")


# Rows a writer keeps as Python tuples before it turns them into Arrow columns: a row waiting
# for its part costs ~1.8 KB as a tuple of objects, ~150-200 bytes as columns
# (docs/performance.md "Memory at 200,000 rows").
CHUNK_ROWS = 2048
# Rows per row group of a part. A row group's worth of columns is encoded as soon as it is
# held: the rows waiting for their part are then ~33 bytes a row of Parquet (and their ids),
# not ~147 of Arrow columns (docs/performance.md, "Issue 25, fifth session").
ROW_GROUP_ROWS = 8192
# Pages (and a column's dictionary, before it falls back to plain values) of 64 KiB, not
# Arrow's 1 MiB: encoding a row group takes ~1 MB of memory less for a moment, and less CPU;
# a unique column (ids, answers) gives up its dictionary sooner (docs/performance.md).
PAGE_BYTES = 64 * 1024


@dataclass
class _Encoded:
    """Rows encoded as Parquet: their ids, and how many have a value in each column."""

    ids: list[pa.ChunkedArray] = field(default_factory=list)
    values: Counter[int] = field(default_factory=Counter)  # column -> rows not null

    @property
    def rows(self) -> int:
        return sum(len(ids) for ids in self.ids)


class _Encoding(_Encoded):
    """A part being encoded in memory, a row group at a time."""

    def __init__(self, schema: pa.Schema) -> None:
        super().__init__()
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(
            self._sink, schema, data_page_size=PAGE_BYTES, dictionary_pagesize_limit=PAGE_BYTES
        )

    def add(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.ids.append(table.column(0))
        for at, column in enumerate(table.columns):
            self.values[at] += len(column) - column.null_count

    def close(self) -> Encoded:
        self._writer.close()
        return Encoded(self.ids, self.values, data=self._sink.getvalue())


@dataclass
class Encoded(_Encoded):
    """A whole part file's bytes, with its rows' ids and values per column."""

    data: pa.Buffer = field(kw_only=True)


@dataclass
class Held:
    """Rows waiting for a part, in order: whole parts encoded already (a failed commit's,
    given back), the row groups of the part being encoded, Arrow chunks, then rows not
    converted yet; and the rows that cannot be stored in the schema, each with the reason."""

    files: list[Encoded] = field(default_factory=list)
    part: _Encoding | None = None
    chunks: list[pa.Table] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    odd: list[tuple[Row, str]] = field(default_factory=list)
    written: int = 0  # how many of ``files`` a commit has written

    def encoded(self) -> list[_Encoded]:
        """The parts held as Parquet: whole ones, then the one being encoded."""
        return [*self.files, *([] if self.part is None else [self.part])]

    def __len__(self) -> int:
        encoded: int = sum(part.rows for part in self.encoded())
        converted: int = sum(chunk.num_rows for chunk in self.chunks)
        return encoded + converted + len(self.rows) + len(self.odd)

    def ids(self) -> Iterator[Any]:
        """The first column (the id) of every row held, lazily."""
        for part in self.encoded():
            for ids in part.ids:
                yield from ids.to_pylist()
        for chunk in self.chunks:
            yield from chunk.column(0).to_pylist()
        for row in self.rows:
            yield row[0]
        for row, _ in self.odd:
            yield row[0]


class PartWriter:
    """Buffers rows of one table and commits them as numbered part files.

    Added rows become Arrow columns every CHUNK_ROWS rows, and a row group's worth of columns
    is encoded into the part at once: a part's worth of rows waits in memory as Parquet, not
    as tuples or columns. ``prefix`` makes the names unique to this run (and
    shard): parts are created under their final names, create-only, so two writers can never
    overwrite each other.
    """

    def __init__(self, storage: Storage, folder: str, schema: pa.Schema, *, prefix: str) -> None:
        self.storage = storage
        self.folder = folder
        self.schema = schema
        self._held = Held()
        self.buffered = 0  # rows held: added, not taken (or given back)
        self._prefix = prefix
        self._seq = 0
        self.committed_rows = 0
        self.last_part_bytes = 0  # the last part's size: about the room the next one needs

    def add(self, row: Row) -> None:
        rows = self._held.rows
        rows.append(row)
        self.buffered += 1
        if len(rows) >= CHUNK_ROWS:
            self._convert(self._held)

    def take(self) -> Held:
        """Hand over the buffered rows (the caller commits them, or gives them back)."""
        held, self._held = self._held, Held()
        self.buffered = 0
        return held

    def give_back(self, held: Held) -> None:
        """Rows taken and not committed go back in front of those added since, in order (as
        a part of their own)."""
        self._seal(held)
        back = Held(held.files[held.written :], odd=held.odd)
        mine = self._held
        self._held = Held(
            [*back.files, *mine.files], mine.part, mine.chunks, mine.rows, [*back.odd, *mine.odd]
        )
        self.buffered += len(back)

    def present(self, column: int) -> int:
        """How many rows held have a value (not null) in ``column``."""
        held = self._held
        converted: int = sum(c.num_rows - c.column(column).null_count for c in held.chunks)
        rows = [*held.rows, *(row for row, _ in held.odd)]
        encoded = sum(part.values[column] for part in held.encoded())
        return encoded + converted + sum(row[column] is not None for row in rows)

    def commit(self, rows: Held | Sequence[Row]) -> list[tuple[Row, str]]:
        """Write rows as part files (one, unless a failed commit's rows were given back);
        blocking (run it in a worker thread).

        Returns the rows that cannot be stored in this schema, each with the reason, so the
        caller can log them as errors: one odd value never costs the other rows."""
        held = rows if isinstance(rows, Held) else Held(rows=list(rows))
        self._seal(held)
        for part in held.files[held.written :]:
            self._seq += 1
            name = f"{self.folder}/{part_name(self._prefix, f'{self._seq:05d}')}"
            self.storage.create(name, functools.partial(_write, part.data))
            held.written += 1  # a failure after this gives back only the others
            self.committed_rows += part.rows
            self.last_part_bytes = part.data.size
        return held.odd

    def _seal(self, held: Held) -> None:
        """Encode what ``held`` holds and close its part: whole parts only."""
        self._convert(held)
        self._encode(held)
        if held.part is not None:
            held.files.append(held.part.close())
            held.part = None

    def _convert(self, held: Held) -> None:
        """``held``'s rows as an Arrow chunk (the rows that do not fit go to its ``odd``),
        encoded once the chunks make a row group."""
        if held.rows:
            table, unstorable = self.to_table(held.rows)
            if table.num_rows:
                held.chunks.append(table)
            held.odd += unstorable
            held.rows = []
            if sum(chunk.num_rows for chunk in held.chunks) >= ROW_GROUP_ROWS:
                self._encode(held)

    def _encode(self, held: Held) -> None:
        """``held``'s chunks into the part it is encoding."""
        if not held.chunks:
            return
        table = pa.concat_tables(held.chunks)
        held.chunks = []
        if held.part is None:
            held.part = _Encoding(self.schema)
        held.part.add(table)
        # What the encoding freed, and what the rows since the last row group left, go back
        # to the system now: the CLI's system allocator keeps freed pages, and a 200,000-row
        # run's RSS climbed ~7 MB between two commits (docs/performance.md).
        pa.default_memory_pool().release_unused()

    def to_table(self, rows: Sequence[Row]) -> tuple[pa.Table, list[tuple[Row, str]]]:
        """The rows as a table of this schema, and the rows that do not fit it."""
        try:
            return self._table(rows), []
        except _CONVERSION_ERRORS:
            pass
        good: list[Row] = []
        bad: list[tuple[Row, str]] = []
        for row in rows:  # only when some row is odd: find which
            try:
                self._table([row])
            except _CONVERSION_ERRORS as exc:
                bad.append((row, " ".join(str(exc).split())))
            else:
                good.append(row)
        return self._table(good), bad

    def _table(self, rows: Sequence[Row]) -> pa.Table:
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.schema)
        arrays = [_array(column, f.type) for column, f in zip(columns, self.schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _write(data: pa.Buffer, handle: BinaryIO) -> None:
    handle.write(data)


def _array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """Values as a column of ``kind``; a value that does not fit raises, never silently cut
    (Arrow would turn 1.5 into 1 for an integer column: a safe cast refuses it)."""
    if pa.types.is_integer(kind):
        if all(type(value) is int or value is None for value in values):
            return pa.array(values, type=kind)  # the usual case: Arrow checks the range
        inferred = pa.array(values)
        number = pa.types.is_integer(inferred.type) or pa.types.is_floating(inferred.type)
        if not (number or pa.types.is_null(inferred.type)):  # a cast would parse "12"
            odd = next(v for v in values if v is not None and not isinstance(v, int | float))
            raise pa.ArrowInvalid(f"{odd!r} is not a number, for an {kind} column")
        return inferred.cast(kind)
    return pa.array(values, type=kind)


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in ``schema``: a column it lacks (or holds as all-null) is nulls of the
    schema's type. Parts of one folder differ in no other way (their schemas unify)."""
    columns = []
    for wanted in schema:
        column = batch.column(wanted.name) if wanted.name in batch.schema.names else None
        if column is None or column.type != wanted.type:
            column = pa.nulls(batch.num_rows, wanted.type)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class Parts:
    """The committed parts of one folder, read in commit order, a batch at a time.

    A part that cannot be read is a StoreError naming the file, wherever the reading happens
    (even inside a write, where it must not pass for a write error).
    """

    def __init__(self, storage: Storage, folder: str) -> None:
        self.storage = storage
        self.folder = folder
        from .compaction import staged_view  # compaction builds on Parts

        self.names, files = staged_view(storage, folder, storage.list(folder))
        _, root = storage.arrow()
        self._paths = [f"{root}/{folder}/{files.get(name, name)}" for name in self.names]
        self.schema = self._schema()

    def _schema(self) -> pa.Schema:
        """Every run's columns: a run after a keep column was added writes a wider schema
        (a run writes one schema, so its first part speaks for all of its parts)."""
        firsts: dict[str, tuple[str, str]] = {}
        for name, path in zip(self.names, self._paths, strict=True):
            firsts.setdefault(_run_of(name), (name, path))
        filesystem, _ = self.storage.arrow()
        schemas = []
        for name, path in firsts.values():
            with self._reading(name):
                schemas.append(pq.read_schema(path, filesystem=filesystem))
        if len(schemas) < 2:
            return schemas[0] if schemas else pa.schema([])
        with self._reading():
            return pa.unify_schemas(schemas)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Up to 32k rows at a time, part after part, in this folder's schema: a column an
        earlier run's part lacks comes as nulls.

        Each part is read a row group at a time as it is needed, with no read-ahead and no
        pre-buffering (either holds the column chunks of many row groups at once:
        docs/performance.md), by ``pyarrow.parquet`` alone (a dataset scan needs
        ``pyarrow.dataset``, ~6 MB more at the end of every run)."""
        if not self._paths:
            return
        names = self.schema.names if columns is None else columns
        fields = [self.schema.field(name) for name in names]
        schema = pa.schema(fields, metadata=self.schema.metadata)
        filesystem, _ = self.storage.arrow()
        for path in self._paths:
            with self._reading(path), filesystem.open_input_file(path) as f:
                reader = pq.ParquetFile(f, pre_buffer=False)
                stored = set(reader.schema_arrow.names)
                wanted = [field.name for field in fields if field.name in stored]
                for batch in reader.iter_batches(32_768, columns=wanted, use_threads=False):
                    yield _conformed(batch, schema)

    def row_groups(self) -> list[tuple[str, int, int]]:
        """(part, row group, rows) of each row group, in commit order (from the footers)."""
        filesystem, _ = self.storage.arrow()
        groups = []
        for name in self.names:
            with self._reading(name), filesystem.open_input_file(self._path(name)) as f:
                meta = pq.ParquetFile(f).metadata
                groups += [
                    (name, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)
                ]
        return groups

    def read_row_group(self, name: str, group: int) -> pa.Table:
        """One row group of a part, in the part's own schema (an earlier run's part may lack
        a column: the reader conforms the rows to the schema it writes)."""
        filesystem, _ = self.storage.arrow()
        with self._reading(name), filesystem.open_input_file(self._path(name)) as f:
            return pq.ParquetFile(f, pre_buffer=False).read_row_group(group, use_threads=False)

    def _path(self, name: str) -> str:
        return self._paths[self.names.index(name)]

    def column(self, name: str, kind: pa.DataType) -> pa.ChunkedArray:
        return pa.chunked_array([batch.column(0) for batch in self.batches([name])], kind)

    @contextlib.contextmanager
    def _reading(self, part: str | None = None) -> Iterator[None]:
        try:
            yield
        except (pa.ArrowException, OSError) as exc:
            where = part or f"a part in {self.storage.location}/{self.folder}"
            reason = " ".join(str(exc).split())  # Arrow's messages span lines
            raise StoreError(
                f"{where} cannot be read ({reason}); if it is damaged, move it out of "
                f"{self.storage.location}/{self.folder} and run again: a run sends its rows again"
            ) from None
