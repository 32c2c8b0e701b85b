"""Writing the final outcomes out: one table to .parquet, .jsonl or .csv (or JSONL to
stdout), optionally joined back to the input's columns (--with-input)."""

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

from ..errors import JobError
from ..prompt import row_id
from ..schema import JSON_TEXT
from ..source import open_input
from ..store import OutputDir, open_storage, write_batches
from ..urls import check_scheme, is_remote, local_path
from .outcomes import Outcomes, final_outcomes


def export_outcomes(outdir: OutputDir, target: str, *, with_input: bool) -> Exported:
    """Write the final outcome per id to .parquet, .jsonl or .csv.

    ``target`` is a local path or a URL (file://, s3://, gs://). Written a batch at a time;
    ``with_input`` joins the whole input in memory first.
    """
    check_scheme(target, "export file")
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
        return Exported(written, outcomes.simulated, outcomes.note)
    write = {".parquet": write_batches, ".csv": _write_csv, ".jsonl": _write_jsonl}[suffix]
    if not is_remote(target) and Path(local_path(target)).is_dir():
        raise JobError(f"cannot export to {target}: it is a folder; name a file")
    open_storage(folder if "/" in target else ".").write_file(
        name,
        lambda handle: write(outcomes.schema, counted(outcomes.batches), handle),
        outdir=False,
    )
    return Exported(written, outcomes.simulated, outcomes.note)


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    rows: int
    simulated: bool  # the answers came from --simulate, not a model
    note: str | None = None  # why the rows are in commit order, when they are


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
    keep = set(settings.get("keep_columns") or ()) & set(outcomes.column_names)
    for name in names:
        if name in keep:  # already a column: only pending rows lack it
            picked = _filled_in(picked, name, [row.get(name) for row in rows])
        elif name != "id":
            field, values = _input_column(name, [row.get(name) for row in rows])
            if name in outcomes.column_names:
                field = field.with_name(f"input_{name}")
            picked = picked.append_column(field, values)
    return picked


def _filled_in(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    """A keep column with its nulls (rows not answered yet) filled from the input's values,
    where they have the column's type."""
    place = table.column_names.index(name)
    column = table.column(name)
    try:
        given = pa.array(values, column.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return table
    return table.set_column(place, table.field(name), pc.coalesce(column, given))


def _input_column(name: str, values: list[Any]) -> tuple[pa.Field, pa.Array]:
    """An input column as Arrow; a column whose values change type between rows (JSONL allows
    it) becomes JSON text, so an export keeps every value instead of failing."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        text = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
        return pa.field(name, pa.string(), metadata=JSON_TEXT), pa.array(text, pa.string())
    return pa.field(name, array.type), array
