"""Reading an output directory back: `zbatch status` figures and `zbatch export` tables."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import store
from .errors import JobError
from .pricing import cost, price_for
from .prompt import row_id
from .source import count_rows, open_input

ERROR_COLUMNS = ["error_type", "status_code", "error_code", "message", "retryable", "failed_at"]


def last_per_id(table: pa.Table) -> pa.Table:
    """The last row of each id, in commit order (the error log's latest entry per id)."""
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    last = indexed.group_by("id", use_threads=False).aggregate([("_row", "max")])
    return table.take(last.sort_by("_row_max").column("_row_max"))


def final_outcomes(outdir: Path) -> pa.Table:
    """One row per id: its result if it has one, else its latest error."""
    results = store.read_parts(outdir / "results")
    errors = store.read_parts(outdir / "errors")
    tables = []
    if results is not None:
        # Each id is in results/ once; a compaction cut off by a crash may briefly show two.
        results = last_per_id(results)
        tables.append(results.append_column("status", pa.repeat("ok", results.num_rows)))
    if errors is not None:
        errors = errors.filter(pc.field("error_type") != "duplicate_id")
        latest = last_per_id(errors)
        if results is not None:
            latest = latest.filter(pc.invert(pc.is_in(latest.column("id"), results.column("id"))))
        status = pc.if_else(latest.column("retryable"), "failed_retryable", "failed")
        tables.append(latest.append_column("status", status))
    if not tables:
        raise JobError(f"{outdir} holds no results or errors yet")
    return pa.concat_tables(tables, promote_options="default")


def status(outdir: Path) -> dict[str, Any]:
    """Counts, tokens, cost and the last run's outcome of an output directory."""
    job = store.read_job_json(outdir)
    settings = job["settings"]
    results = store.read_parts(outdir / "results")
    state = store.load_state(outdir)
    done = len(state.succeeded)
    failed = state.failed
    retryable = sum(1 for i, (_, r) in state.latest_error.items() if r and i not in state.succeeded)
    tokens = {"prompt": 0, "completion": 0, "cached": 0}
    labels: Counter[str] = Counter()
    if results is not None:
        for key, column in (
            ("prompt", "prompt_tokens"),
            ("completion", "completion_tokens"),
            ("cached", "cached_tokens"),
        ):
            tokens[key] = int(pc.sum(results.column(column)).as_py() or 0)
        if "label" in results.column_names:
            labels.update(v for v in results.column("label").to_pylist() if v is not None)
    try:
        input_rows: int | None = count_rows(open_input(settings["input_path"]).paths)
    except JobError:
        input_rows = None
    model = settings.get("model") or "glm-4.6"
    spent = cost(
        price_for(model, settings.get("prices") or {}),
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
    """Write the final outcome per id to .parquet, .jsonl or .csv; returns the row count."""
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise JobError(f"cannot export to {target}: use a .parquet, .jsonl or .csv file name")
    table = final_outcomes(outdir)
    if with_input:
        table = _join_input(table, store.read_job_json(outdir)["settings"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        store.write_atomic(target, lambda handle: pq.write_table(table, handle))
    elif suffix == ".csv":
        flat = _flatten(table)
        store.write_atomic(target, lambda handle: pacsv.write_csv(flat, handle))
    else:
        store.write_atomic(target, lambda handle: _write_jsonl(table, handle))
    return int(table.num_rows)


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


def _flatten(table: pa.Table) -> pa.Table:
    """CSV cannot hold nested values: write lists and structs as JSON text."""
    for index, column_field in enumerate(table.schema):
        if pa.types.is_nested(column_field.type):
            values = [
                None if v is None else json.dumps(v, default=str)
                for v in table.column(index).to_pylist()
            ]
            table = table.set_column(index, column_field.name, pa.array(values, pa.string()))
    return table


def _write_jsonl(table: pa.Table, handle: Any) -> None:
    for batch in table.to_batches(max_chunksize=10_000):
        lines = [json.dumps(row, default=str, ensure_ascii=False) for row in batch.to_pylist()]
        if lines:
            handle.write(("\n".join(lines) + "\n").encode())
