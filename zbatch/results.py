"""Reading an output directory back as one table: the final outcome of every id."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .errors import JobError
from .pipeline import storable
from .prompt import row_id
from .schema import JSON_TEXT
from .source import open_input
from .store import ERRORS, RESULTS, OutputDir, Parts, open_storage, write_batches
from .urls import is_remote, local_path

STATUS = pa.field("status", pa.string())
SIMULATED = b"zbatch.simulated"  # ok, failed, failed_retryable (pending: --with-input)


@dataclass(frozen=True)
class Outcomes:
    """One row per id, its result if it has one, else its latest error, read part by part.

    Which rows those are is worked out from the id columns alone; the rows themselves are
    then read a batch at a time, so exporting a million results holds one batch of them.
    """

    schema: pa.Schema  # with metadata {"zbatch.simulated": "true"} for --simulate answers
    batches: Iterator[pa.RecordBatch]

    @property
    def simulated(self) -> bool:
        return (self.schema.metadata or {}).get(SIMULATED) == b"true"


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
    fixed = fixed_places(outdir, result_ids, error_ids)
    if len(fixed):  # an unreadable line fixed since: its row is settled under its real id
        open_errors = pc.and_(open_errors, pc.invert(pc.is_in(error_ids, value_set=fixed)))
    keep_errors = _last_of_each_id(error_ids, open_errors)
    del result_ids, error_ids, error_types, open_errors
    schema = pa.unify_schemas(
        [results.schema.append(STATUS), errors.schema.append(STATUS)], promote_options="default"
    )
    if (outdir.read_job_if_any() or {}).get("settings", {}).get("simulate"):
        schema = schema.with_metadata({SIMULATED: b"true"})

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in _kept(results, keep_results):
            status = pa.repeat(pa.scalar("ok"), batch.num_rows)
            yield _conform(batch.append_column(STATUS, status), schema)
        for batch in _kept(errors, keep_errors):
            status = pc.if_else(batch.column("retryable"), "failed_retryable", "failed")
            yield _conform(batch.append_column(STATUS, status), schema)

    return Outcomes(schema, batches())


def fixed_places(
    outdir: OutputDir, result_ids: pa.ChunkedArray, error_ids: pa.ChunkedArray | pa.Array
) -> pa.Array:
    """The errors logged under a place (``?in.jsonl line 7``: the line had no usable id)
    whose place now holds a row with an id that is settled (has a result or an error): such
    an error is fixed and counts no more. An input that cannot be read fixes nothing."""
    places = set(pc.filter(error_ids, pc.starts_with(error_ids, "?")).to_pylist())
    settings = (outdir.read_job_if_any() or {}).get("settings")
    found: dict[str, str] = {}
    if places and settings is not None:
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


def export_outcomes(outdir: OutputDir, target: str, *, with_input: bool) -> Exported:
    """Write the final outcome per id to .parquet, .jsonl or .csv.

    ``target`` is a local path or a URL (file://, s3://, gs://). Written a batch at a time;
    ``with_input`` joins the whole input in memory first.
    """
    folder, _, name = target.rstrip("/").rpartition("/")
    suffix = ".jsonl" if target == "-" else Path(name).suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise JobError(f"cannot export to {target}: use a .parquet, .jsonl or .csv file name")
    outcomes = final_outcomes(outdir)
    if with_input:
        table = pa.Table.from_batches(outcomes.batches, outcomes.schema)
        table = _join_input(table, outdir.read_job()["settings"])
        table = table.replace_schema_metadata(outcomes.schema.metadata)
        outcomes = Outcomes(table.schema, iter(table.to_batches()))
    written = 0

    def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal written
        for batch in batches:
            written += batch.num_rows
            yield batch

    if target == "-":  # to stdout, as JSONL (for a pipe)
        _write_jsonl(outcomes.schema, counted(outcomes.batches), sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return Exported(written, outcomes.simulated)
    write = {".parquet": write_batches, ".csv": _write_csv, ".jsonl": _write_jsonl}[suffix]
    if not is_remote(target) and Path(local_path(target)).is_dir():
        raise JobError(f"cannot export to {target}: it is a folder; name a file")
    open_storage(folder if "/" in target else ".").write_file(
        name,
        lambda handle: write(outcomes.schema, counted(outcomes.batches), handle),
        outdir=False,
    )
    return Exported(written, outcomes.simulated)


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    rows: int
    simulated: bool  # the answers came from --simulate, not a model


def _write_csv(schema: pa.Schema, batches: Iterator[pa.RecordBatch], handle: Any) -> None:
    """CSV cannot hold nested values: lists and structs are written as JSON text."""
    flat = pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_nested(f.type) else f for f in schema]
    )
    with pacsv.CSVWriter(handle, flat) as writer:
        for batch in batches:
            columns = [_json_text(c) if pa.types.is_nested(c.type) else c for c in batch.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=flat))


def _json_text(column: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
        pa.string(),
    )


def _write_jsonl(schema: pa.Schema, batches: Iterator[pa.RecordBatch], handle: Any) -> None:
    """One JSON object per row: timestamps in ISO 8601, JSON-text columns as JSON again (a
    list stays a list)."""
    as_json = [f.name for f in schema if (f.metadata or {}).get(b"zbatch.json") == b"true"]
    for batch in batches:
        rows = batch.to_pylist()
        for row in rows:
            for name in as_json:
                if isinstance(row[name], str):
                    row[name] = json.loads(row[name])
        lines = [json.dumps(row, default=_iso, ensure_ascii=False) for row in rows]
        if lines:
            handle.write(("\n".join(lines) + "\n").encode())


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def _join_input(outcomes: pa.Table, settings: dict[str, Any]) -> pa.Table:
    """One row per input id, in input order, with the input's columns after the outcome's.

    Joined by position (each input id picks its outcome's row with ``take``), not with an
    Arrow join: those refuse list/struct columns, which inputs may hold.
    """
    rows = []
    seen: set[str] = set()
    for raw in open_input(settings["input_path"]).rows():
        if raw.data is None:
            continue
        rid = row_id(raw.data, settings.get("id_column"))
        if rid is None or rid in seen:
            continue
        seen.add(rid)
        rows.append({**raw.data, "id": rid})
    names = list(dict.fromkeys(name for row in rows for name in row))
    position = {rid: i for i, rid in enumerate(outcomes.column("id").to_pylist())}
    picked = outcomes.take(pa.array([position.get(row["id"]) for row in rows], pa.int64()))
    status = pc.if_else(pc.is_null(picked.column("status")), "pending", picked.column("status"))
    picked = picked.set_column(picked.column_names.index("status"), "status", status)
    picked = picked.set_column(
        picked.column_names.index("id"), "id", pa.array([row["id"] for row in rows], pa.string())
    )
    for name in names:
        if name != "id":
            field, values = _input_column(name, [row.get(name) for row in rows])
            if name in outcomes.column_names:
                field = field.with_name(f"input_{name}")
            picked = picked.append_column(field, values)
    return picked


def _input_column(name: str, values: list[Any]) -> tuple[pa.Field, pa.Array]:
    """An input column as Arrow; a column whose values change type between rows (JSONL allows
    it) becomes JSON text, so an export keeps every value instead of failing."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        text = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        return pa.field(name, pa.string(), metadata=JSON_TEXT), pa.array(text, pa.string())
    return pa.field(name, array.type), array
