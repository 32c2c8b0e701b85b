"""`zbatch export` without --with-input: one row per id, read part by part.

The end-to-end test in test_run_end_to_end.py covers --with-input and `zbatch status`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from conftest import read_export
from test_store import RESULTS, error_row, result_row, write_parts

from zbatch import export
from zbatch.errors import JobError
from zbatch.schema import ERROR_SCHEMA


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write_parts(
        out / "results",
        RESULTS,
        [
            [result_row("a", "A1"), result_row("b", "B")],
            # "a" again: what a compaction cut off by a crash can briefly leave; the later wins
            [result_row("a", "A2"), result_row("c", "C")],
        ],
    )
    write_parts(
        out / "errors",
        ERROR_SCHEMA,
        [
            [error_row("x", "timeout", True, "x first"), error_row("b", "timeout", True, "b")],
            [
                error_row("x", "content_filter", False, "x last"),
                error_row("y", "server_error", True, "y"),
                error_row("c", "duplicate_id", False, "c repeated"),
            ],
            [error_row("z", "duplicate_id", False, "only ever repeated")],
        ],
    )
    return out


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_each_id_gets_its_result_else_its_latest_error_in_commit_order(
    outdir: Path, tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / f"export{suffix}"
    assert export(outdir, target, with_input=False).rows == 5
    rows = read_export(target)
    assert [(r["id"], r["status"], r["content"], r["message"]) for r in rows] == [
        ("b", "ok", "B", None),  # b's earlier error does not count: it has a result
        ("a", "ok", "A2", None),
        ("c", "ok", "C", None),
        ("x", "failed", None, "x last"),
        ("y", "failed_retryable", None, "y"),
    ]  # z was only ever a repeat of another row: no row of its own
    error_only = [name for name in ERROR_SCHEMA.names if name not in RESULTS.names]
    assert list(rows[0]) == [*RESULTS.names, "status", *error_only]


def test_an_outdir_with_nothing_committed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="holds no results or errors yet"):
        export(tmp_path, tmp_path / "x.parquet", with_input=False)


def test_nested_columns_become_json_text_in_csv(tmp_path: Path) -> None:
    schema = RESULTS.append(pa.field("tags", pa.list_(pa.string())))
    rows = [(*result_row("a"), ["x", "y"]), (*result_row("b"), None)]
    write_parts(tmp_path / "out" / "results", schema, [rows])
    target = tmp_path / "x.csv"
    export(tmp_path / "out", target, with_input=False)
    assert [(r["id"], r["tags"]) for r in read_export(target)] == [("a", '["x", "y"]'), ("b", None)]
