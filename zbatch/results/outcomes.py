"""Reading an output directory back as one table: the final outcome of every id."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobError
from ..pipeline import storable
from ..prompt import row_id
from ..readers.base import DoneRows
from ..schema import RESULT_FIELDS, SAMPLE_FIELDS, infer_type, keep_caster
from ..source import open_input
from ..store import ERRORS, RESULTS, OutputDir, Parts

STATUS = pa.field("status", pa.string())
SIMULATED = b"zbatch.simulated"  # ok, failed, failed_retryable (pending: --with-input)
NOTE = b"zbatch.note"  # why the rows are not in input order, when they are not
# An export in input order gathers this many rows at a time (its memory bound, with one row
# group of a part and the input's ids and keep columns).
WINDOW_ROWS = 8192
INPUT_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class Outcomes:
    """One row per id, its result if it has one, else its latest error, read part by part.

    Which rows those are, and their order, is worked out from the id columns alone; the rows
    themselves are then read a window at a time, so exporting a million results holds one
    window of them. Rows come in input order (the ids no longer in the input after them, in
    commit order), with the job's keep columns filled in from the input where a row lacks
    them (it was answered before the column was added); in commit order, with a ``note``,
    when the input cannot be read.
    """

    schema: pa.Schema  # with metadata {"zbatch.simulated": "true"} for --simulate answers
    batches: Iterator[pa.RecordBatch]

    @property
    def simulated(self) -> bool:
        return (self.schema.metadata or {}).get(SIMULATED) == b"true"

    @property
    def note(self) -> str | None:
        note = (self.schema.metadata or {}).get(NOTE)
        return None if note is None else note.decode()


@dataclass(frozen=True)
class _Table:
    """A table's committed rows that are final outcomes, and where each one is stored."""

    number: int  # 0 results, 1 errors
    parts: Parts
    keep: pa.Array  # a flag per committed row

    @functools.cached_property
    def groups(self) -> list[tuple[str, int, int]]:
        """(part, row group, rows) of each row group, in commit order."""
        return self.parts.row_groups()

    def status(self, batch: pa.RecordBatch) -> pa.Array:
        if self.parts.folder == ERRORS:
            return pc.if_else(batch.column("retryable"), "failed_retryable", "failed")
        return pa.repeat(pa.scalar("ok"), batch.num_rows)


def final_outcomes(outdir: OutputDir) -> Outcomes:
    """The outcome of every id that has one; JobError when nothing was committed yet."""
    results = outdir.parts(RESULTS)
    errors = outdir.parts(ERRORS)
    if not results.names and not errors.names:
        raise JobError(f"{outdir.location} holds no results or errors yet")
    result_ids = results.column("id", pa.string())
    # Each id is in results/ once; a compaction cut off by a crash may briefly show two.
    keep_results = _last_of_each_id(result_ids)
    error_ids = errors.column("id", pa.string())
    error_types = errors.column("error_type", pa.string())
    open_errors = pc.and_(
        pc.not_equal(error_types, "duplicate_id"),
        pc.invert(pc.is_in(error_ids, value_set=result_ids)),
    )
    settings = (outdir.read_job_if_any() or {}).get("settings", {})
    fixed = fixed_places(settings, result_ids, error_ids)
    if len(fixed):  # an unreadable line fixed since: its row is settled under its real id
        open_errors = pc.and_(open_errors, pc.invert(pc.is_in(error_ids, value_set=fixed)))
    keep_errors = _last_of_each_id(error_ids, open_errors)
    kept_ids = pa.chunked_array(
        [*result_ids.filter(keep_results).chunks, *error_ids.filter(keep_errors).chunks],
        pa.string(),
    )
    del result_ids, error_ids, error_types, open_errors
    schema = pa.unify_schemas(
        [results.schema.append(STATUS), errors.schema.append(STATUS)], promote_options="default"
    )
    metadata = {SIMULATED: b"true"} if settings.get("simulate") else {}
    tables = [_Table(0, results, keep_results), _Table(1, errors, keep_errors)]
    try:
        order = _InputOrder.read(settings, schema, _keep_columns(settings, results.schema))
    except JobError as exc:
        metadata[NOTE] = f"in commit order, keep columns as stored: {exc}".encode()
        schema = schema.with_metadata(metadata or None)
        return Outcomes(schema, _in_commit_order(tables, schema))
    for name, column in order.keep.items():
        if name not in schema.names:
            schema = schema.append(pa.field(name, column.type))
    schema = schema.with_metadata(metadata or None)
    return Outcomes(schema, _in_input_order(tables, kept_ids, order, schema))


def _keep_columns(settings: dict[str, Any], results: pa.Schema) -> list[str]:
    """The job's keep columns, and those an earlier run kept (stored after the answer's own
    columns): each is filled in from the input for rows stored without it."""
    own = {f.name for f in (*RESULT_FIELDS, *SAMPLE_FIELDS)} | {"label", "json"}
    own |= {str(entry).partition(":")[0] for entry in settings.get("json_fields") or ()}
    own |= set((settings.get("output_schema") or {}).get("properties") or ())
    earlier = [name for name in results.names if name not in own]
    listed = [str(name) for name in settings.get("keep_columns") or ()]
    return earlier + [name for name in listed if name not in earlier]


def _in_commit_order(tables: list[_Table], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for table in tables:
        for batch in _kept(table.parts, table.keep):
            yield _conform(batch.append_column(STATUS, table.status(batch)), schema)


@dataclass(frozen=True)
class _InputOrder:
    """The ids of the input in its order, and the job's keep columns alongside."""

    ids: pa.ChunkedArray
    keep: dict[str, pa.ChunkedArray]

    @classmethod
    def read(cls, settings: dict[str, Any], schema: pa.Schema, names: list[str]) -> _InputOrder:
        """JobError when the job's input cannot be read (moved away, piped in on stdin)."""
        if "input_path" not in settings:
            raise JobError("job.json names no input")
        inputs = open_input(settings["input_path"])
        types = {**inputs.arrow_types(), **{f.name: f.type for f in schema if f.name in names}}
        ids: list[pa.Array] = []
        keep: dict[str, list[pa.Array]] = {name: [] for name in names}
        block_ids: list[str] = []
        block: dict[str, list[Any]] = {name: [] for name in names}

        def flush() -> None:
            for name, values in block.items():
                if name not in types:  # a JSONL or CSV column: typed by its first value
                    types[name] = infer_type(next((v for v in values if v is not None), None))
                cast = keep_caster(types[name])
                keep[name].append(_storable_array([cast(v) for v in values], types[name]))
                values.clear()
            ids.append(_storable_array(block_ids, pa.string()))
            block_ids.clear()

        # Without keep columns only the ids are needed: blocks of them come as DoneRows,
        # read without making a row of each (ids as row_id would make them: no padding).
        items = (
            inputs.rows()
            if names
            else inputs.rows_or_done(
                settings.get("id_column"), lambda ids: all(i == i.strip() != "" for i in ids)
            )
        )
        for item in items:
            if isinstance(item, DoneRows):
                block_ids.extend(item.ids)
            elif item.data is not None:
                if (rid := row_id(item.data, settings.get("id_column"))) is None:
                    continue
                block_ids.append(rid)
                for name, values in block.items():
                    values.append(item.data.get(name))
            if len(block_ids) >= INPUT_BLOCK_ROWS:
                flush()
        flush()
        return cls(
            pa.chunked_array(ids, pa.string()),
            {name: pa.chunked_array(keep[name], types[name]) for name in names},
        )


def _storable_array(values: list[Any], kind: pa.DataType) -> pa.Array:
    """Values as a column; one that cannot be stored (text with a lone surrogate, which
    the run logged as invalid_input) is null, so that its row is not matched or filled."""
    try:
        return pa.array(values, kind)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    fitting = []
    for value in values:
        try:
            pa.array([value], kind)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            value = None
        fitting.append(value)
    return pa.array(fitting, kind)


def _in_input_order(
    tables: list[_Table], kept_ids: pa.ChunkedArray, order: _InputOrder, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The kept rows sorted by their id's place in the input (ids not in it after, in commit
    order: the sort is stable), read a window at a time: each window reads the row groups
    that hold its rows."""
    key, row_of = (pa.concat_arrays(list(c)) for c in zip(*map(_locate, tables), strict=True))
    place = pc.index_in(kept_ids, value_set=order.ids)
    sequence = pc.array_sort_indices(place, null_placement="at_end")
    reader = _GroupReader(tables)
    for start in range(0, len(sequence), WINDOW_ROWS):
        window = sequence.slice(start, WINDOW_ROWS)
        batch = _gather(reader, key.take(window), row_of.take(window), schema)
        yield _filled(batch, place.take(window), order)


def _locate(table: _Table) -> tuple[pa.Array, pa.Array]:
    """For each kept row of a table: (table << 32 | its row group), and its row in the group."""
    rows = pc.indices_nonzero(table.keep).cast(pa.int64())
    sizes = [size for _, _, size in table.groups]
    group_of = pa.concat_arrays(
        [pa.repeat(pa.scalar(g, pa.int64()), n) for g, n in enumerate(sizes)]
        or [pa.array([], pa.int64())]
    ).take(rows)
    starts = pa.array(list(itertools.accumulate(sizes, initial=0)), pa.int64())
    row_of = pc.subtract(rows, starts.take(group_of)).cast(pa.int32())
    return pc.add(group_of, table.number << 32), row_of


class _GroupReader:
    """Reads row groups, keeping the one that held the last window's last row: results are
    committed roughly in input order, so the next window usually starts in it."""

    def __init__(self, tables: list[_Table]) -> None:
        self.tables = tables
        self._kept: tuple[int, pa.Table] | None = None

    def read(self, code: int, *, keep: bool) -> tuple[_Table, pa.Table]:
        table = self.tables[code >> 32]
        if self._kept is not None and self._kept[0] == code:
            rows = self._kept[1]
        else:
            name, group, _ = table.groups[code & 0xFFFFFFFF]
            rows = table.parts.read_row_group(name, group)
        self._kept = (code, rows) if keep else self._kept
        return table, rows


def _gather(
    reader: _GroupReader, key: pa.Array, row_of: pa.Array, schema: pa.Schema
) -> pa.RecordBatch:
    """The rows at (table << 32 | row group, row), in the order given."""
    pieces, places = [], []
    last = key[len(key) - 1].as_py()
    for code in sorted(pc.unique(key).to_pylist()):
        here = pc.equal(key, code)
        table, group = reader.read(code, keep=code == last)
        rows = _one_batch(group.take(row_of.filter(here)))
        pieces.append(_conform(rows.append_column(STATUS, table.status(rows)), schema))
        places.append(pc.indices_nonzero(here))
    gathered = pa.Table.from_batches(pieces, schema).take(pc.sort_indices(pa.concat_arrays(places)))
    return _one_batch(gathered)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    columns = [column.combine_chunks() for column in table.columns]
    return pa.RecordBatch.from_arrays(columns, schema=table.schema)


def _filled(batch: pa.RecordBatch, place: pa.Array, order: _InputOrder) -> pa.RecordBatch:
    """Keep columns taken from each row's input row where the stored row has none."""
    for name, column in order.keep.items():
        at = batch.schema.get_field_index(name)
        kind = batch.schema.field(at).type
        from_input = column.take(place).combine_chunks().cast(kind)
        batch = batch.set_column(
            at, batch.schema.field(at), pc.coalesce(batch.column(at), from_input)
        )
    return batch


def fixed_places(
    settings: dict[str, Any], result_ids: pa.ChunkedArray, error_ids: pa.ChunkedArray | pa.Array
) -> pa.Array:
    """The errors logged under a place (``?in.jsonl line 7``: the line had no usable id)
    whose place now holds a row with an id that is settled (has a result or an error): such
    an error is fixed and counts no more. An input that cannot be read (``settings``, of
    job.json, name none) fixes nothing."""
    places = set(pc.filter(error_ids, pc.starts_with(error_ids, "?")).to_pylist())
    found: dict[str, str] = {}
    if places and "input_path" in settings:
        try:
            for raw in open_input(settings["input_path"]).rows():
                place = f"?{raw.where}"
                if place in places and raw.data is not None:
                    now = row_id(raw.data, settings.get("id_column"))
                    if now is not None and storable((now,))[0] == now:  # else still failing
                        found[place] = now
        except JobError:
            found = {}
    now_ids = pa.array(list(found.values()), pa.string())
    settled = pc.or_(
        pc.is_in(now_ids, value_set=result_ids), pc.is_in(now_ids, value_set=error_ids)
    )
    return pc.filter(pa.array(list(found), pa.string()), settled)


def _kept(parts: Parts, keep: pa.Array) -> Iterator[pa.RecordBatch]:
    """The rows of ``parts`` where ``keep`` (one flag per row) is true, a batch at a time."""
    start = 0
    for batch in parts.batches():
        kept = batch.filter(keep.slice(start, batch.num_rows))
        start += batch.num_rows
        if kept.num_rows:
            yield kept


def _last_of_each_id(ids: pa.ChunkedArray, where: pa.ChunkedArray | None = None) -> pa.Array:
    """A flag per row: true for the last row of its id (among the rows ``where`` is true)."""
    if where is None and pc.count_distinct(ids).as_py() == len(ids):
        return pa.repeat(pa.scalar(True), len(ids))  # the usual case: skip the group-by
    numbers = pa.array(range(len(ids)), pa.int64())
    rows = pa.table({"id": ids, "row": numbers})
    if where is not None:
        rows = rows.filter(where)
    last = rows.group_by("id", use_threads=False).aggregate([("row", "max")])
    return pc.is_in(numbers, value_set=last.column("row_max"))


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns in its order; the ones it lacks are null."""
    columns = [
        batch.column(field.name).cast(field.type)
        if field.name in batch.schema.names
        else pa.nulls(batch.num_rows, field.type)
        for field in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
