"""Reading an output directory back: `zbatch status` figures and `zbatch export` tables."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import store
from .errors import JobError
from .pricing import cost, price_for
from .prompt import row_id
from .providers import provider_for
from .source import count_rows, open_input

STATUS = pa.field("status", pa.string())  # ok, failed, failed_retryable (pending: --with-input)


@dataclass(frozen=True)
class Outcomes:
    """One row per id, its result if it has one, else its latest error, read part by part.

    Which rows those are is worked out from the id columns alone; the rows themselves are
    then read a batch at a time, so exporting a million results holds one batch of them.
    """

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


def final_outcomes(outdir: Path) -> Outcomes:
    """The outcome of every id that has one; JobError when nothing was committed yet."""
    results = store.Parts(outdir / "results")
    errors = store.Parts(outdir / "errors")
    if not results.files and not errors.files:
        raise JobError(f"{outdir} holds no results or errors yet")
    result_ids = results.column("id", pa.string())
    # Each id is in results/ once; a compaction cut off by a crash may briefly show two.
    keep_results = _last_of_each_id(result_ids)
    error_ids = errors.column("id", pa.string())
    error_types = errors.column("error_type", pa.string())
    open_errors = pc.and_(
        pc.not_equal(error_types, "duplicate_id"),
        pc.invert(pc.is_in(error_ids, value_set=result_ids)),
    )
    keep_errors = _last_of_each_id(error_ids, open_errors)
    del result_ids, error_ids, error_types, open_errors
    schema = pa.unify_schemas(
        [results.schema.append(STATUS), errors.schema.append(STATUS)], promote_options="default"
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in _kept(results, keep_results):
            status = pa.repeat(pa.scalar("ok"), batch.num_rows)
            yield _conform(batch.append_column(STATUS, status), schema)
        for batch in _kept(errors, keep_errors):
            status = pc.if_else(batch.column("retryable"), "failed_retryable", "failed")
            yield _conform(batch.append_column(STATUS, status), schema)

    return Outcomes(schema, batches())


def _kept(parts: store.Parts, keep: pa.Array) -> Iterator[pa.RecordBatch]:
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


def status(outdir: Path) -> dict[str, Any]:
    """Counts, tokens, cost and the last run's outcome of an output directory."""
    job = store.read_job_json(outdir)
    settings = job["settings"]
    results = store.Parts(outdir / "results")
    state = store.load_state(outdir)
    done = len(state.succeeded)
    failed = state.failed
    retryable = sum(1 for i, (_, r) in state.latest_error.items() if r and i not in state.succeeded)
    tokens = {"prompt": 0, "completion": 0, "cached": 0}
    labels: Counter[str] = Counter()
    if results.files:  # only the columns counted here are read
        for key, column in (
            ("prompt", "prompt_tokens"),
            ("completion", "completion_tokens"),
            ("cached", "cached_tokens"),
        ):
            tokens[key] = int(pc.sum(results.column(column, pa.int64())).as_py() or 0)
        if "label" in results.schema.names:
            for count in pc.value_counts(results.column("label", pa.string())).to_pylist():
                if count["values"] is not None:
                    labels[count["values"]] += count["counts"]
    try:
        input_rows: int | None = count_rows(open_input(settings["input_path"]).paths)
    except JobError:
        input_rows = None
    model = settings.get("model") or "glm-4.6"
    spent = cost(
        price_for(model, settings.get("prices") or {}, provider_for(settings["base_url"]).prices),
        tokens["prompt"],
        tokens["cached"],
        tokens["completion"],
    )
    last_run = None
    summary_path = outdir / "summary.json"
    if summary_path.exists():
        last_run = json.loads(summary_path.read_text(encoding="utf-8"))
    return {
        "outdir": str(outdir),
        "input_rows": input_rows,
        "done": done,
        "failed": failed,
        "failed_retryable": retryable,
        "pending": None if input_rows is None else max(0, input_rows - done - failed),
        "tokens": tokens,
        "cost_usd": None if spent is None else round(spent, 6),
        "labels": dict(labels),
        "last_run": None
        if last_run is None
        else {"outcome": last_run["outcome"], "exit_code": last_run["exit_code"]},
    }


def format_status(report: dict[str, Any]) -> str:
    """The status report as a small table."""
    tokens = report["tokens"]
    cost_text = "unknown" if report["cost_usd"] is None else f"${report['cost_usd']:.4f}"
    last = report["last_run"]
    pending = "unknown (input not found)" if report["pending"] is None else report["pending"]
    rows = [
        ("output", report["outdir"]),
        ("input rows", report["input_rows"] if report["input_rows"] is not None else "unknown"),
        ("done", report["done"]),
        ("failed", report["failed"]),
        ("retryable errors", report["failed_retryable"]),
        ("pending", pending),
        ("tokens in / out", f"{tokens['prompt']} / {tokens['completion']}"),
        ("cost so far", cost_text),
        ("last run", "none" if last is None else f"{last['outcome']} (exit {last['exit_code']})"),
    ]
    if report["labels"]:
        labels = sorted(report["labels"].items(), key=lambda kv: -kv[1])
        rows.append(("labels", ", ".join(f"{k} {v}" for k, v in labels)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def export(outdir: Path, target: Path, *, with_input: bool) -> int:
    """Write the final outcome per id to .parquet, .jsonl or .csv; returns the row count.

    Written a batch at a time; ``with_input`` joins the whole input in memory first.
    """
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise JobError(f"cannot export to {target}: use a .parquet, .jsonl or .csv file name")
    outcomes = final_outcomes(outdir)
    if with_input:
        table = pa.Table.from_batches(outcomes.batches, outcomes.schema)
        table = _join_input(table, store.read_job_json(outdir)["settings"])
        outcomes = Outcomes(table.schema, iter(table.to_batches()))
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0

    def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal written
        for batch in batches:
            written += batch.num_rows
            yield batch

    write = {".parquet": store.write_batches, ".csv": _write_csv, ".jsonl": _write_jsonl}[suffix]
    store.write_atomic(
        target, lambda handle: write(outcomes.schema, counted(outcomes.batches), handle)
    )
    return written


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
    for batch in batches:
        lines = [json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist()]
        if lines:
            handle.write(("\n".join(lines) + "\n").encode())


def _join_input(outcomes: pa.Table, settings: dict[str, Any]) -> pa.Table:
    """One row per input id, in input order, with the input's columns after the outcome's."""
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
    inputs = pa.Table.from_pylist(rows)
    inputs = inputs.append_column("_order", pa.array(range(inputs.num_rows), pa.int64()))
    clashing = [c for c in inputs.column_names if c in outcomes.column_names and c != "id"]
    inputs = inputs.rename_columns(
        [f"input_{c}" if c in clashing else c for c in inputs.column_names]
    )
    joined = inputs.join(outcomes, keys="id", join_type="left outer", use_threads=False)
    joined = joined.sort_by("_order").drop_columns(["_order"])
    status = pc.if_else(pc.is_null(joined.column("status")), "pending", joined.column("status"))
    joined = joined.set_column(joined.column_names.index("status"), "status", status)
    front = [c for c in outcomes.column_names if c in joined.column_names]
    rest = [c for c in joined.column_names if c not in front]
    return joined.select(front + rest)
