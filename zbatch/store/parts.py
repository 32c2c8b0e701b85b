"""Part files: rows buffered and committed as numbered Parquet parts, and read back in order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
# Rows per row group of a part: the Parquet writer holds a whole row group's encoded pages
# until it ends, ~9 MB more at the peak for a part of 50,000 rows in one group, ~3 MB in
# groups of 8,192 (docs/performance.md "Memory at 200,000 rows").
ROW_GROUP_ROWS = 8192


@dataclass
class Held:
    """Rows waiting for a part, in order: Arrow chunks, then rows not converted yet; and the
    rows that cannot be stored in the schema, each with the reason."""

    chunks: list[pa.Table] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    odd: list[tuple[Row, str]] = field(default_factory=list)

    def __len__(self) -> int:
        converted: int = sum(chunk.num_rows for chunk in self.chunks)
        return converted + len(self.rows) + len(self.odd)

    def ids(self) -> Iterator[Any]:
        """The first column (the id) of every row held, lazily."""
        for chunk in self.chunks:
            yield from chunk.column(0).to_pylist()
        for row in self.rows:
            yield row[0]
        for row, _ in self.odd:
            yield row[0]


class PartWriter:
    """Buffers rows of one table and commits them as numbered part files.

    Added rows become Arrow columns every CHUNK_ROWS rows, so a part's worth of rows waits
    in memory as columns, not as tuples. ``prefix`` makes the names unique to this run (and
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
        self.last_part_bytes = 0  # in memory, an upper bound of the file: the room to keep

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
        """Rows taken and not committed go back in front of those added since, in order."""
        self._convert(held)
        mine = self._held
        self._held = Held([*held.chunks, *mine.chunks], mine.rows, [*held.odd, *mine.odd])
        self.buffered += len(held)

    def present(self, column: int) -> int:
        """How many rows held have a value (not null) in ``column``."""
        held = self._held
        converted: int = sum(c.num_rows - c.column(column).null_count for c in held.chunks)
        rows = [*held.rows, *(row for row, _ in held.odd)]
        return converted + sum(row[column] is not None for row in rows)

    def commit(self, rows: Held | Sequence[Row]) -> list[tuple[Row, str]]:
        """Write rows as one part file; blocking (run it in a worker thread).

        Returns the rows that cannot be stored in this schema, each with the reason, so the
        caller can log them as errors: one odd value never costs the other rows."""
        held = rows if isinstance(rows, Held) else Held(rows=list(rows))
        self._convert(held)
        if held.chunks:
            table = pa.concat_tables(held.chunks)
            self._seq += 1
            name = f"{self.folder}/{part_name(self._prefix, f'{self._seq:05d}')}"
            self.storage.create(
                name, lambda handle: pq.write_table(table, handle, row_group_size=ROW_GROUP_ROWS)
            )
            # The pages the encoding freed go back to the system now (the CLI's system
            # allocator keeps them otherwise: ~2 MB of a run's peak at 200,000 rows).
            pa.default_memory_pool().release_unused()
            self.committed_rows += table.num_rows
            self.last_part_bytes = table.nbytes
        return held.odd

    def _convert(self, held: Held) -> None:
        """``held``'s rows as an Arrow chunk; the rows that do not fit go to its ``odd``."""
        if held.rows:
            table, unstorable = self.to_table(held.rows)
            if table.num_rows:
                held.chunks.append(table)
            held.odd += unstorable
            held.rows = []

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
