"""The output directory: result schema, atomic part files, resume state, compaction, the lock."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import SPEC_ERROR_COLUMNS, SPEC_RESULT_COLUMNS
from faults import Torn
from helpers import job

from zbatch.errors import LockedError, StoreError
from zbatch.schema import ERROR_SCHEMA, infer_type, keep_caster, result_schema
from zbatch.store import LocalStorage, OutputDir, Parts, PartWriter
from zbatch.store import parts as parts_module
from zbatch.store import storage as storage_module
from zbatch.store.compaction import COMPACT_JOURNAL
from zbatch.store.parts import ROW_GROUP_ROWS

UTC_MS = pa.timestamp("ms", tz="UTC")
T0 = 1_760_000_000_000  # a completed_at / failed_at in ms
PREFIX = "20260101T000000.000-abcd"  # a run's part-name prefix: stamp and random hex


def columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def result_row(row_id: str, content: str = "ok", **fields: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "id": row_id,
        "content": content,
        "reasoning_content": None,
        "finish_reason": "stop",
        "model": "glm-4.6",
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "total_tokens": 12,
        "cached_tokens": None,
        "request_id": f"req-{row_id}",
        "attempts": 1,
        "latency_ms": 120,
        "completed_at": T0,
        "cached": False,
    }
    values.update(fields)
    return tuple(values[name] for name, _ in SPEC_RESULT_COLUMNS)


def error_row(row_id: str, error_type: str, retryable: bool, message: str = "m") -> tuple:
    status = 429 if retryable else 400
    return (row_id, error_type, status, None, message, 1, retryable, T0, None)


def writer(folder: Path, schema: pa.Schema, prefix: str = PREFIX) -> PartWriter:
    """A run's writer of a table: ``folder`` is OUTDIR/results or OUTDIR/errors."""
    return PartWriter(LocalStorage(folder.parent), folder.name, schema, prefix=prefix)


def part_paths(folder: Path) -> list[Path]:
    """The committed parts of a table's folder, as zbatch lists them (in commit order)."""
    return [folder / name for name in Parts(LocalStorage(folder.parent), folder.name).names]


def write_parts(
    folder: Path, schema: pa.Schema, batches: list[list[tuple]], prefix: str = PREFIX
) -> list[Path]:
    """Commit each batch as one part, the way a run does; returns the part each commit made."""
    parts = writer(folder, schema, prefix)
    made = []
    for batch in batches:
        before = set(part_paths(folder))
        assert parts.commit(batch) == []
        [new] = set(part_paths(folder)) - before
        made.append(new)
    return made


RESULTS = pa.schema([pa.field(n, t) for n, t in SPEC_RESULT_COLUMNS])


def read_parts(folder: Path) -> pa.Table:
    """Every committed part of a folder as one table, in commit order."""
    return ds.dataset([str(p) for p in part_paths(folder)], format="parquet").to_table()


def load_state(outdir: Path) -> Any:
    return OutputDir(str(outdir)).load_state()


def compact(outdir: Path) -> list[tuple[str, int, int]]:
    return OutputDir(str(outdir)).compact()


# --- result_schema --------------------------------------------------------------------------


def test_result_schema_has_exactly_the_spec_columns_and_types_in_order():
    assert columns(result_schema(job(), {})) == SPEC_RESULT_COLUMNS


def test_error_schema_has_exactly_the_spec_columns_and_types_in_order():
    assert columns(ERROR_SCHEMA) == SPEC_ERROR_COLUMNS


def test_labels_add_a_string_label_column_after_the_base_columns():
    schema = result_schema(job(choices=("positive", "negative")), {})
    assert columns(schema) == [*SPEC_RESULT_COLUMNS, ("label", pa.string())]


def test_json_object_adds_a_string_json_column_then_the_typed_json_fields():
    settings = job(
        response_format="json_object",
        json_fields=("name", "score:int", "ratio:float", "ok:bool", "tags:json", "note:string"),
    )
    assert columns(result_schema(settings, {})) == [
        *SPEC_RESULT_COLUMNS,
        ("json", pa.string()),
        ("name", pa.string()),
        ("score", pa.int64()),
        ("ratio", pa.float64()),
        ("ok", pa.bool_()),
        ("tags", pa.string()),
        ("note", pa.string()),
    ]


def test_keep_columns_come_last_with_their_input_types_or_string():
    settings = job(
        choices=("a", "b"), response_format="json_object", keep_columns=("stars", "lang", "when")
    )
    keep_types = {"stars": pa.int64(), "when": pa.timestamp("us")}
    assert columns(result_schema(settings, keep_types)) == [
        *SPEC_RESULT_COLUMNS,
        ("label", pa.string()),
        ("json", pa.string()),
        ("stars", pa.int64()),
        ("lang", pa.string()),  # no type known: string
        ("when", pa.timestamp("us")),
    ]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, pa.bool_()),
        (3, pa.int64()),
        (2.5, pa.float64()),
        ("x", pa.string()),
        (None, pa.string()),
        ([1], pa.string()),
    ],
)
def test_infer_type_of_a_json_keep_column_from_its_first_value(value, kind):
    assert infer_type(value) == kind


def test_keep_caster_fits_json_values_to_the_column_type_or_null():
    assert keep_caster(pa.string())({"a": "é"}) == '{"a": "é"}'
    assert keep_caster(pa.string())(None) is None
    assert keep_caster(pa.int64())(True) is None  # a bool is not an int
    assert keep_caster(pa.int64())("3") is None
    assert keep_caster(pa.int64())(3) == 3
    assert keep_caster(pa.float64())(2) == 2.0
    assert keep_caster(pa.bool_())(1) is None


# --- part files -----------------------------------------------------------------------------


def test_an_all_null_batch_keeps_every_column_type(tmp_path):
    settings = job(
        choices=("yes", "no"),
        response_format="json_object",
        json_fields=("score:int", "ok:bool"),
        keep_columns=("stars",),
    )
    schema = result_schema(settings, {"stars": pa.float64()})
    rows = [tuple(None for _ in schema)] * 3
    [path] = write_parts(tmp_path / "results", schema, [rows])
    stored = pq.read_schema(path)
    assert stored.remove_metadata().equals(schema.remove_metadata())
    # ... and read as a dataset, the way a user reads results/
    table = ds.dataset(tmp_path / "results", format="parquet").to_table()
    assert table.schema.remove_metadata().equals(schema.remove_metadata())
    assert table.num_rows == 3
    assert table.column("cached_tokens").null_count == 3


def test_a_committed_part_holds_the_rows_it_was_given(tmp_path):
    rows = [result_row("a", "Paris", cached_tokens=5), result_row("b", "Rome")]
    [path] = write_parts(tmp_path / "results", RESULTS, [rows])
    table = pq.read_table(path)
    assert table.column("id").to_pylist() == ["a", "b"]
    assert table.column("content").to_pylist() == ["Paris", "Rome"]
    assert table.column("cached_tokens").to_pylist() == [5, None]
    completed = table.column("completed_at").to_pylist()[0]
    assert completed.tzinfo is not None
    assert int(completed.timestamp() * 1000) == T0


def test_commit_of_no_rows_writes_no_file(tmp_path):
    assert writer(tmp_path / "results", RESULTS).commit([]) == []
    assert list(tmp_path.iterdir()) == []


def test_parts_are_numbered_in_commit_order_and_counted(tmp_path):
    paths = write_parts(tmp_path / "results", RESULTS, [[result_row(str(i))] for i in range(12)])
    assert [p.name for p in paths] == [f"part-{PREFIX}-{i:05d}.parquet" for i in range(1, 13)]
    assert part_paths(tmp_path / "results") == paths


def test_hidden_temp_files_are_not_parts(tmp_path):
    write_parts(tmp_path / "results", RESULTS, [[result_row("a")]])
    (tmp_path / "results" / ".part-x-00002.parquet.tmp").write_bytes(b"half a file")
    assert [p.name for p in part_paths(tmp_path / "results")] == [f"part-{PREFIX}-00001.parquet"]
    assert read_parts(tmp_path / "results").column("id").to_pylist() == ["a"]


def test_a_commit_never_overwrites_a_part_of_the_same_name(tmp_path):
    """Parts are created under their final names create-only: a second writer that picks a
    taken name fails, and the part already there keeps its rows; no temp file is left."""
    [first] = write_parts(tmp_path / "results", RESULTS, [[result_row("a", "Paris")]])
    before = first.read_bytes()
    clash = writer(tmp_path / "results", RESULTS)  # same prefix: same first part name
    with pytest.raises(FileExistsError):
        clash.commit([result_row("b", "Rome")])
    assert first.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [first.name]
    assert clash.committed_rows == 0


def test_rows_that_do_not_fit_the_schema_come_back_with_a_reason_and_the_rest_are_saved(
    tmp_path,
):
    """One odd value never costs the other rows (issue 11 item 1): a commit stores the rows
    that fit and hands back each one that does not, with why, in the order given."""
    good = [result_row("a", "Paris"), result_row("b", "Rome"), result_row("c", "Oslo")]
    odd = {
        "int-request-id": result_row("int-request-id", request_id=12345),
        "string-tokens": result_row("string-tokens", prompt_tokens="12"),
        "huge-tokens": result_row("huge-tokens", total_tokens=2**70),
        "surrogate": result_row("surrogate", "half a pair \ud800"),
    }
    rows = [odd["int-request-id"], good[0], odd["string-tokens"], good[1]]
    rows += [odd["huge-tokens"], good[2], odd["surrogate"]]
    parts = writer(tmp_path / "results", RESULTS)

    unstorable = parts.commit(rows)

    assert [row for row, _ in unstorable] == list(odd.values())
    reasons = {row[0]: reason for row, reason in unstorable}
    assert "int" in reasons["int-request-id"]
    assert "'12'" in reasons["string-tokens"] and "int64" in reasons["string-tokens"]
    assert "too large" in reasons["huge-tokens"]
    assert "surrogate" in reasons["surrogate"]
    assert all("\n" not in reason for reason in reasons.values())  # one line for a log
    table = read_parts(tmp_path / "results")
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert table.column("content").to_pylist() == ["Paris", "Rome", "Oslo"]
    assert parts.committed_rows == 3


def test_a_commit_of_only_rows_that_do_not_fit_writes_no_part(tmp_path):
    """The error log's writer too: an error row of the wrong kinds comes back, no empty part."""
    parts = writer(tmp_path / "errors", ERROR_SCHEMA)
    odd = [
        ("e1", "server_error", "500", None, "m", 1, True, T0, None),  # status as text
        ("e2", "timeout", None, None, "m", 2**40, True, T0, None),  # attempts past int32
    ]
    assert [row for row, _ in parts.commit(odd)] == odd
    assert part_paths(tmp_path / "errors") == []
    assert parts.committed_rows == 0


class FullDisk:
    """An opener whose files fail with ENOSPC after ``room`` bytes, like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.opened: list[Path] = []

    def __call__(self, path: Path, mode: str) -> Torn:
        self.opened.append(Path(path))
        return Torn(open(path, mode), room=self.room, err=errno.ENOSPC)  # closed by Torn


def full_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> FullDisk:
    """Make storage.py's files fail like a full disk: a module global ``open`` there shadows
    the builtin for that module only."""
    opener = FullDisk(room)
    monkeypatch.setattr(storage_module, "open", opener, raising=False)
    return opener


def test_a_write_on_a_full_disk_leaves_no_temp_file_and_raises_a_clear_store_error(
    tmp_path, monkeypatch
):
    target = tmp_path / "summary.json"
    opener = full_disk(monkeypatch, room=10)
    with pytest.raises(StoreError) as caught:
        LocalStorage(tmp_path).write_bytes("summary.json", b"x" * 100)
    message = str(caught.value)
    assert str(target) in message
    assert os.strerror(errno.ENOSPC) in message  # "No space left on device"
    assert "run the same command to resume" in message
    assert caught.value.exit_code == 74
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    # It was writing to a hidden temp name, which is gone; the target was never created.
    assert opener.opened == [tmp_path / ".summary.json.tmp"]
    assert list(tmp_path.iterdir()) == []


def test_a_part_commit_on_a_full_disk_leaves_earlier_parts_intact_and_can_be_retried(
    tmp_path, monkeypatch
):
    """A commit that fails mid-file leaves no trace; the caller still holds the rows and,
    once there is room, commits them with the same writer."""
    folder = tmp_path / "results"
    parts = writer(tmp_path / "results", RESULTS, prefix="S")
    assert parts.commit([result_row("a")]) == []
    rows = [result_row(str(i), "x" * 200) for i in range(50)]
    opener = full_disk(monkeypatch, room=100)  # fails inside pyarrow's write, mid-file
    with pytest.raises(StoreError, match=r"part-S-00002\.parquet"):
        parts.commit(rows)
    assert opener.opened == [folder / ".part-S-00002.parquet.tmp"]
    assert [p.name for p in folder.iterdir()] == ["part-S-00001.parquet"]
    assert read_parts(tmp_path / "results").column("id").to_pylist() == ["a"]
    assert parts.committed_rows == 1

    monkeypatch.undo()  # space freed
    assert parts.commit(rows) == []
    ids = read_parts(tmp_path / "results").column("id").to_pylist()
    assert ids == ["a", *(str(i) for i in range(50))]
    assert parts.committed_rows == 51
    assert sorted(p.name for p in folder.iterdir()) == [
        p.name for p in part_paths(tmp_path / "results")
    ]


def test_a_whole_file_write_replaces_the_target_whole(tmp_path):
    target = tmp_path / "job.json"
    target.write_text("old")
    LocalStorage(tmp_path).write_bytes("job.json", b"new")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


# --- resume state ---------------------------------------------------------------------------


def test_an_output_directory_without_parts_has_an_empty_state(tmp_path):
    state = load_state(tmp_path)
    assert len(state.succeeded) == 0
    assert state.latest_error == {}
    assert not state.is_done("anything")


def test_ids_in_results_are_done_even_with_retry_failed(tmp_path):
    write_parts(
        tmp_path / "results", RESULTS, [[result_row("a"), result_row("b")], [result_row("c")]]
    )
    state = load_state(tmp_path)
    assert len(state.succeeded) == 3
    for row_id in "abc":
        assert state.is_done(row_id)
        assert state.is_done(row_id, retry_failed=True)
    assert not state.is_done("d")


def test_the_latest_error_of_an_id_decides_whether_it_is_done(tmp_path):
    write_parts(
        tmp_path / "errors",
        ERROR_SCHEMA,
        [
            [error_row("a", "rate_limited", True), error_row("b", "content_filter", False)],
            [error_row("a", "bad_request", False), error_row("b", "timeout", True)],
            [error_row("c", "server_error", True), error_row("c", "bad_request", False)],
        ],
    )
    state = load_state(tmp_path)
    # a: retryable, then not -> done
    assert state.latest_error["a"] == ("bad_request", False)
    assert state.is_done("a")
    # b: not retryable, then retryable (e.g. a --retry-failed run that timed out) -> send again
    assert state.latest_error["b"] == ("timeout", True)
    assert not state.is_done("b")
    # c: within one part, the later row wins
    assert state.latest_error["c"] == ("bad_request", False)
    assert state.is_done("c")
    assert state.failed == 3  # every id whose latest outcome is an error
    assert state.failed_retryable == 1  # b, which the next run sends again


def test_retry_failed_resends_non_retryable_errors_only(tmp_path):
    write_parts(
        tmp_path / "errors",
        ERROR_SCHEMA,
        [[error_row("filtered", "content_filter", False), error_row("flaky", "timeout", True)]],
    )
    write_parts(tmp_path / "results", RESULTS, [[result_row("ok")]])
    state = load_state(tmp_path)
    assert state.is_done("filtered")
    assert not state.is_done("filtered", retry_failed=True)
    assert not state.is_done("flaky")
    assert not state.is_done("flaky", retry_failed=True)
    assert state.is_done("ok", retry_failed=True)


def test_a_success_after_an_error_makes_the_id_done_and_not_failed(tmp_path):
    write_parts(tmp_path / "errors", ERROR_SCHEMA, [[error_row("a", "bad_request", False)]])
    write_parts(tmp_path / "results", RESULTS, [[result_row("a")]])
    state = load_state(tmp_path)
    assert state.is_done("a", retry_failed=True)
    assert state.failed == 0


def test_result_ids_read_back_a_batch_at_a_time_are_the_same_set(tmp_path):
    """load_state streams the result ids (batches of 32k, part after part) into a compact
    set sized once from the parts' footers: every committed id is done, once, and no other
    id is; looked up a block at a time or one by one, the answer is the same."""
    ids = [f"r{n:06d}" for n in range(80_000)]
    parts = [ids[:40_000], ids[40_000:75_000], ids[75_000:], ids[:5]]  # the last repeats 5
    write_parts(tmp_path / "results", RESULTS, [[result_row(i) for i in p] for p in parts])
    state = load_state(tmp_path)
    assert len(state.succeeded) == len(ids)
    assert len(state.succeeded._slots) == 80_005 * 3 // 2 * 4 // 3 + 1  # sized once, half full
    assert all(state.all_done(ids[at : at + 4096]) for at in range(0, len(ids), 4096))
    others = [f"r{n:06d}" for n in range(80_000, 84_096)]
    assert not state.succeeded.contains_many(others).any()
    assert not state.all_done([*ids[:10], others[0]])
    assert [state.is_done(i) for i in ids[::997] + others[::997]] == [True] * 81 + [False] * 5


def test_status_counts_distinct_result_ids_a_batch_at_a_time(tmp_path):
    """count_state streams the result ids: an id committed twice counts once, and only the
    result ids that also have an error are kept as ids (the error figures look at them)."""
    ids = [f"r{n:05d}" for n in range(40_000)]
    parts = [ids[:35_000], ids[35_000:], ["r00007", "r39999", "late"]]  # two ids again
    write_parts(tmp_path / "results", RESULTS, [[result_row(i) for i in p] for p in parts])
    errors = [error_row("late", "timeout", True), error_row("gone", "content_filter", False)]
    write_parts(tmp_path / "errors", ERROR_SCHEMA, [errors])
    done, state = OutputDir(str(tmp_path)).count_state()
    assert done == 40_001
    assert len(state.succeeded) == 1 and "late" in state.succeeded
    assert "gone" not in state.succeeded and "r00007" not in state.succeeded
    assert state.failed == 1 and state.open_errors() == {"gone": ("content_filter", False)}
    full = load_state(tmp_path)
    assert len(full.succeeded) == done and full.failed == state.failed


def test_a_replay_looks_up_only_the_journals_keys_in_the_parts(tmp_path):
    """A replay holds the keys its journals name, not every committed key: of the wanted
    keys, those some part holds (results by id, errors by id and time)."""
    from zbatch.store.journal import _committed_keys

    write_parts(tmp_path / "results", RESULTS, [[result_row(f"r{n}") for n in range(5000)]])
    failed = error_row("e1", "timeout", True)
    write_parts(tmp_path / "errors", ERROR_SCHEMA, [[failed]])
    at = read_parts(tmp_path / "errors").column("failed_at")[0].as_py()  # as a journal holds it
    wanted = {
        "results": {("r7",), ("r4999",), ("new",)},
        "errors": {("e1", at), ("e1", None), ("r7", at)},
    }
    found = _committed_keys(OutputDir(str(tmp_path)), wanted)
    assert found == {"results": {("r7",), ("r4999",)}, "errors": {("e1", at)}}
    assert _committed_keys(OutputDir(str(tmp_path)), {"results": set()}) == {
        "results": set(),
        "errors": set(),
    }


def test_a_block_is_all_done_with_final_errors_but_not_with_retryable_ones(tmp_path):
    write_parts(tmp_path / "results", RESULTS, [[result_row("a"), result_row("b")]])
    write_parts(
        tmp_path / "errors",
        ERROR_SCHEMA,
        [[error_row("filtered", "content_filter", False), error_row("flaky", "timeout", True)]],
    )
    state = load_state(tmp_path)
    assert state.all_done(["a", "filtered", "b"])
    assert not state.all_done(["a", "filtered", "b"], retry_failed=True)
    assert state.all_done(["a", "filtered"], retry_failed={"timeout"})
    assert not state.all_done(["a", "flaky"])
    assert state.all_done([])


def test_duplicate_id_errors_are_remembered_apart_and_do_not_change_the_outcome(tmp_path):
    write_parts(tmp_path / "results", RESULTS, [[result_row("dup")]])
    write_parts(
        tmp_path / "errors",
        ERROR_SCHEMA,
        [[error_row("dup", "duplicate_id", False), error_row("x", "timeout", True)]],
    )
    state = load_state(tmp_path)
    assert state.duplicates_logged == {"dup"}
    assert "dup" not in state.latest_error
    assert state.is_done("dup")
    assert not state.is_done("x")


def test_a_duplicate_id_error_does_not_hide_an_earlier_error_of_the_same_id(tmp_path):
    write_parts(
        tmp_path / "errors",
        ERROR_SCHEMA,
        [[error_row("d", "bad_request", False)], [error_row("d", "duplicate_id", False)]],
    )
    state = load_state(tmp_path)
    assert state.latest_error["d"] == ("bad_request", False)
    assert state.duplicates_logged == {"d"}


def damage(part: Path) -> None:
    """Overwrite the first data page; the footer still reads, the rows do not."""
    data = bytearray(part.read_bytes())
    data[4:40] = b"\xff" * 36
    part.write_bytes(bytes(data))


def test_a_part_that_cannot_be_read_stops_the_resume_naming_the_file(tmp_path):
    outdir = tmp_path / "out"
    parts = write_parts(
        outdir / "results", RESULTS, [[result_row("a")], [result_row("b")], [result_row("c")]]
    )
    damage(parts[1])
    with pytest.raises(StoreError, match=rf"{parts[1]} cannot be read .*run again"):
        load_state(outdir)


# --- compaction -----------------------------------------------------------------------------

TABLES = ("results", "errors")


def make_outdir(tmp_path: Path) -> Path:
    outdir = tmp_path / "out"
    write_parts(
        outdir / "results",
        RESULTS,
        [[result_row(f"r{i}", f"answer {i}") for i in range(k, k + 3)] for k in (0, 3, 6)],
    )
    write_parts(
        outdir / "errors",
        ERROR_SCHEMA,
        [
            [error_row("e1", "timeout", True, "first"), error_row("e2", "bad_request", False)],
            [error_row("e1", "server_error", True, "second")],
            [error_row("e1", "content_filter", False, "third"), error_row("e3", "timeout", True)],
        ],
    )
    return outdir


def rows_of(outdir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's committed rows, in commit order."""
    return {t: [tuple(r.values()) for r in read_parts(outdir / t).to_pylist()] for t in TABLES}


def leftovers(outdir: Path) -> dict[str, list[str]]:
    """Files in results/ and errors/ that are not committed parts (journals, staged, temp)."""
    names = {t: {p.name for p in part_paths(outdir / t)} for t in TABLES}
    return {
        t: sorted(p.name for p in (outdir / t).iterdir() if p.name not in names[t]) for t in TABLES
    }


def assert_in_place_of(merged: str, old: list[str]) -> None:
    """The merged part sorts where the last old part did: after the others, and before the
    parts of any later run, so the error log keeps its order (the latest error wins)."""
    later = f"part-20260101T000000.001-0000-{1:05d}.parquet"
    assert sorted([*old[:-1], merged, later]) == [*old[:-1], merged, later]


def test_compact_merges_each_folder_into_one_part_with_every_row_once_in_order(tmp_path):
    outdir = make_outdir(tmp_path)
    before = rows_of(outdir)
    olds = {t: [p.name for p in part_paths(outdir / t)] for t in TABLES}
    state_before = load_state(outdir)

    report = compact(outdir)

    assert report == [("results", 3, 1), ("errors", 3, 1)]
    [merged] = part_paths(outdir / "results")
    assert_in_place_of(merged.name, olds["results"])
    assert rows_of(outdir) == before
    ids = read_parts(outdir / "results").column("id").to_pylist()
    assert ids == [f"r{i}" for i in range(9)]
    [merged] = part_paths(outdir / "errors")
    assert_in_place_of(merged.name, olds["errors"])
    # The error log keeps its order, so the latest error still wins.
    state_after = load_state(outdir)
    assert state_after.latest_error == state_before.latest_error
    assert state_after.latest_error["e1"] == ("content_filter", False)
    assert len(state_after.succeeded) == len(state_before.succeeded) == 9
    assert state_after.succeeded.contains_many(ids).all()
    assert leftovers(outdir) == {"results": [], "errors": []}  # no journal, staged or temp


def test_compact_leaves_a_single_part_or_no_part_alone(tmp_path):
    outdir = tmp_path / "out"
    [only] = write_parts(outdir / "results", RESULTS, [[result_row("a")]])
    before = only.read_bytes()
    assert compact(outdir) == [("results", 1, 1), ("errors", 0, 0)]
    assert only.read_bytes() == before


def test_compact_twice_changes_nothing_the_second_time(tmp_path):
    outdir = make_outdir(tmp_path)
    compact(outdir)
    after_first = rows_of(outdir)
    assert compact(outdir) == [("results", 1, 1), ("errors", 1, 1)]
    assert rows_of(outdir) == after_first


def test_a_merged_part_stays_before_the_parts_of_later_runs(tmp_path):
    """Compacted, then resumed: the later run's parts sort after the merged one, so a second
    compaction keeps commit order and a later error of an id still wins."""
    outdir = make_outdir(tmp_path)
    compact(outdir)
    later = "20260101T000000.001-beef"  # a later run's prefix
    write_parts(outdir / "results", RESULTS, [[result_row("r9", "answer 9")]], prefix=later)
    write_parts(outdir / "errors", ERROR_SCHEMA, [[error_row("e1", "timeout", True)]], prefix=later)
    before = rows_of(outdir)
    assert [row[0] for row in before["results"]] == [f"r{i}" for i in range(10)]

    assert compact(outdir) == [("results", 2, 1), ("errors", 2, 1)]

    assert rows_of(outdir) == before
    assert load_state(outdir).latest_error["e1"] == ("timeout", True)


class Crash(BaseException):
    """Stands for the process dying between two changes to the output directory."""


class Watched(LocalStorage):
    """A local OUTDIR that notes every change made to it, and what a reader of results/ and
    errors/ finds before each; with ``crash_at`` it dies just before that (1-based) change."""

    def __init__(self, root: Path, crash_at: int | None = None) -> None:
        super().__init__(root)
        self.crash_at = crash_at
        self.changes: list[tuple[str, str]] = []
        self.moments: list[dict[str, dict[str, list[tuple[Any, ...]]]]] = []

    def _change(self, op: str, name: str) -> None:
        self.moments.append(snapshot(self.root))
        self.changes.append((op, name))
        if len(self.changes) == self.crash_at:
            raise Crash(f"{op} {name}")

    def write_bytes(self, name: str, data: bytes) -> None:
        self._change("write", name)
        super().write_bytes(name, data)

    def create(self, name: str, write: Any) -> None:
        self._change("create", name)
        super().create(name, write)

    def move(self, src: str, dst: str) -> None:
        self._change("move", src)
        super().move(src, dst)

    def delete(self, name: str) -> None:
        self._change("delete", name)
        super().delete(name)


def snapshot(root: Path) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """What a reader of each folder would find now: every visible part's rows, by name.

    Readers skip hidden names (pyarrow.dataset ignores '.' and '_' prefixes)."""
    found = {}
    for table in TABLES:
        folder = root / table
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        found[table] = {
            name: [tuple(r.values()) for r in pq.read_table(folder / name).to_pylist()]
            for name in names
            if not name.startswith((".", "_"))
        }
    return found


# The changes a compaction of three parts per table makes, in order (issue 11 item 10): the
# journal, the merged part staged under a hidden name, the old parts removed, the staged part
# moved to the last old part's name, the journal removed.
COMPACTION_STEPS = [
    (table, step)
    for table in TABLES
    for step in ("journal", "stage", "remove 1", "remove 2", "remove 3", "move", "forget")
]


def test_compaction_makes_its_changes_in_the_order_that_keeps_readers_safe(tmp_path):
    outdir = make_outdir(tmp_path)
    parts = {t: [p.name for p in part_paths(outdir / t)] for t in TABLES}
    storage = Watched(outdir)
    OutputDir(str(outdir), storage).compact()
    expected = []
    for table in TABLES:
        staged = storage.changes[len(expected) + 1][1]
        assert staged.startswith(f"{table}/."), "staged where readers look"
        expected += [("write", f"{table}/{COMPACT_JOURNAL}"), ("create", staged)]
        expected += [("delete", f"{table}/{name}") for name in parts[table]]
        expected += [("move", staged), ("delete", f"{table}/{COMPACT_JOURNAL}")]
    assert storage.changes == expected
    assert len(expected) == len(COMPACTION_STEPS)


@pytest.mark.parametrize(
    "step", range(1, len(COMPACTION_STEPS) + 1), ids=[f"{t}-{s}" for t, s in COMPACTION_STEPS]
)
def test_a_compaction_cut_off_before_any_step_shows_each_row_at_most_once_and_is_finished(
    tmp_path, step
):
    """Killed just before each change it makes, a compaction leaves readers every row at most
    once (and none that never was); what a run does first (tidy) then leaves every row exactly
    once in order, finishing the merge once it was staged, else keeping the old parts; and a
    compaction after that ends with one part per table."""
    outdir = make_outdir(tmp_path)
    before = rows_of(outdir)
    parts_before = {t: part_paths(outdir / t) for t in TABLES}
    table, name = COMPACTION_STEPS[step - 1]
    with pytest.raises(Crash):
        OutputDir(str(outdir), Watched(outdir, crash_at=step)).compact()

    for t, parts in snapshot(outdir).items():
        seen = Counter(row for rows in parts.values() for row in rows)
        assert not seen - Counter(before[t]), f"{t}: a reader sees a row twice or a new row"

    OutputDir(str(outdir)).tidy()
    assert rows_of(outdir) == before
    assert leftovers(outdir) == {"results": [], "errors": []}
    staged = name not in ("journal", "stage")
    for t in TABLES:
        if TABLES.index(t) < TABLES.index(table) or (t == table and staged):
            [merged] = part_paths(outdir / t)
            assert_in_place_of(merged.name, [p.name for p in parts_before[t]])
        else:
            assert part_paths(outdir / t) == parts_before[t], t

    counts = [(t, len(part_paths(outdir / t)), 1) for t in TABLES]
    assert compact(outdir) == counts
    assert rows_of(outdir) == before


def test_no_reader_of_a_compacting_folder_sees_a_row_twice(tmp_path):
    """A reader lists a folder at one moment and opens each listed part then or later; an open
    file keeps the rows it had. Whatever moments it picks during a compaction, it never gets a
    row twice: no part name ever stands for rows another listed name still holds."""
    outdir = make_outdir(tmp_path)
    storage = Watched(outdir)
    OutputDir(str(outdir), storage).compact()
    moments = [*storage.moments, snapshot(outdir)]
    for table in TABLES:
        for listed_at, listing in enumerate(moments):
            later = moments[listed_at:]
            for first, second in itertools.combinations(sorted(listing[table]), 2):
                for a, b in itertools.product(later, later):
                    if first in a[table] and second in b[table]:
                        shared = set(a[table][first]) & set(b[table][second])
                        assert not shared, (
                            f"{table}: listed at change {listed_at}, {first} and {second} "
                            f"opened later both hold {sorted(shared)[:3]}"
                        )


def test_tidy_without_a_journal_changes_no_part(tmp_path):
    outdir = make_outdir(tmp_path)
    parts = {t: part_paths(outdir / t) for t in TABLES}
    before = rows_of(outdir)
    OutputDir(str(outdir)).tidy()
    assert {t: part_paths(outdir / t) for t in TABLES} == parts
    assert rows_of(outdir) == before


def test_compact_stops_on_a_part_it_cannot_read_and_keeps_every_part(tmp_path):
    outdir = make_outdir(tmp_path)
    parts = part_paths(outdir / "results")
    before = [p.read_bytes() for p in parts]
    damage(parts[1])

    with pytest.raises(StoreError, match=rf"{parts[1].name} cannot be read .*move it out of"):
        compact(outdir)

    OutputDir(str(outdir)).tidy()  # what the next run does first
    assert part_paths(outdir / "results") == parts
    assert parts[0].read_bytes() == before[0] and parts[2].read_bytes() == before[2]
    assert leftovers(outdir)["results"] == []


# --- the lock -------------------------------------------------------------------------------


def locked(outdir: Path, shard: tuple[int, int] | None = None) -> Any:
    return OutputDir(str(outdir)).locked(shard)


def test_a_second_lock_in_the_same_process_is_refused_naming_the_holders_pid(tmp_path):
    """flock locks belong to an open file description, so a second open() conflicts."""
    holder = locked(tmp_path)
    second = locked(tmp_path)
    with holder, pytest.raises(LockedError, match=rf"pid {os.getpid()}\b"), second:
        pass


def test_the_lock_file_names_the_holder_and_is_released_afterwards(tmp_path):
    with locked(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    with locked(tmp_path):  # released: can be taken again
        pass
    assert (tmp_path / ".lock").exists()  # never removed


def test_locked_creates_the_output_directory(tmp_path):
    outdir = tmp_path / "new" / "out"
    with locked(outdir):
        assert outdir.is_dir()


@pytest.mark.parametrize(
    ("lock", "shard", "target_exists"),
    [(".lock", None, True), (".lock", None, False), (".lock-2of4", (2, 4), True)],
    ids=["to-a-file", "dangling", "shard-lock"],
)
def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(
    tmp_path, lock, shard, target_exists
):
    """A link planted at OUTDIR/.lock (or a shard's lock) is never followed: the run stops
    with a StoreError (exit 74) naming it, and the file it points to is neither created,
    truncated nor written."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    target = tmp_path / "precious.txt"
    if target_exists:
        target.write_text("not zbatch's to write\n")
    (outdir / lock).symlink_to(target)

    with pytest.raises(StoreError) as caught, locked(outdir, shard):
        pass

    assert caught.value.exit_code == 74
    assert str(outdir / lock) in str(caught.value) and "symbolic link" in str(caught.value)
    assert (outdir / lock).is_symlink()
    if target_exists:
        assert target.read_text() == "not zbatch's to write\n"
    else:
        assert not target.exists()


HOLDER = textwrap.dedent(
    """
    import sys
    from zbatch.store import OutputDir
    with OutputDir(sys.argv[1]).locked():
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def start_holder(outdir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(outdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_lock_held_by_another_process_is_refused_naming_its_pid(tmp_path):
    proc = start_holder(tmp_path)
    try:
        with pytest.raises(LockedError) as caught, locked(tmp_path):
            pass
        assert f"pid {proc.pid} " in str(caught.value)
        assert str(tmp_path / ".lock") in str(caught.value)
    finally:
        proc.communicate("\n", timeout=30)
    assert proc.returncode == 0
    with locked(tmp_path):  # the holder exited: free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with locked(tmp_path):
        assert f"pid {os.getpid()} " in (tmp_path / ".lock").read_text()


def test_tidy_removes_temp_files_a_crash_left_behind(tmp_path):
    """A run starts by deleting hidden .tmp parts a crash left; committed parts stay."""
    results = tmp_path / "results"
    results.mkdir()
    leftover = results / ".part-x-00001.parquet.tmp"
    leftover.write_bytes(b"half a file")
    kept = results / "part-x-00000.parquet"
    pq.write_table(pa.table({"id": ["a"]}), kept)
    OutputDir(str(tmp_path)).tidy()
    assert not leftover.exists()
    assert kept.exists()


def test_rows_wait_as_arrow_chunks_and_a_failed_write_gives_them_back_in_order(
    tmp_path, monkeypatch
):
    """A writer turns its rows into Arrow chunks every CHUNK_ROWS rows, a row that does not
    fit waits beside them; a failed write gives every row back in front of those added
    since, and the next commit writes each row once with its own answer, the odd one
    coming back to be logged as an error."""
    monkeypatch.setattr(parts_module, "CHUNK_ROWS", 4)
    folder = tmp_path / "results"
    parts = writer(folder, RESULTS, prefix="H")
    odd = result_row("odd", prompt_tokens="many")
    for row in [*(result_row(str(i), f"answer {i}") for i in range(5)), odd]:
        parts.add(row)
    for i in range(5, 10):
        parts.add(result_row(str(i), f"answer {i}"))
    held = parts.take()
    assert [chunk.num_rows for chunk in held.chunks] == [4, 3]  # 0-3, then 4, 5, 6 (odd aside)
    assert [row[0] for row in held.rows] == ["7", "8", "9"]
    assert [row for row, _ in held.odd] == [odd]
    assert parts.buffered == 0 and len(held) == 11
    parts.add(result_row("new", "answer new"))  # added while the write was under way
    with pytest.MonkeyPatch.context() as disk:
        full_disk(disk, room=100)
        with pytest.raises(StoreError):
            parts.commit(held)
    parts.give_back(held)
    assert parts.buffered == 12
    assert part_paths(folder) == []

    unstorable = parts.commit(parts.take())
    assert [row for row, _ in unstorable] == [odd]
    assert "many" in unstorable[0][1]
    table = read_parts(folder)
    expected = [*(str(i) for i in range(10)), "new"]
    assert table.column("id").to_pylist() == expected
    assert table.column("content").to_pylist() == [f"answer {i}" for i in expected]
    assert parts.committed_rows == 11 and parts.buffered == 0


def test_present_counts_the_held_error_rows_that_keep_a_paid_answer(tmp_path, monkeypatch):
    """What a run that cannot save its last rows reports as paid answers: error rows with an
    answer, whether converted to Arrow already or not."""
    monkeypatch.setattr(parts_module, "CHUNK_ROWS", 4)
    parts = writer(tmp_path / "errors", ERROR_SCHEMA)
    answer = ERROR_SCHEMA.names.index("answer")
    for i in range(6):
        row = error_row(str(i), "invalid_json", False)
        parts.add((*row[:answer], f"paid {i}") if i in (1, 5) else row)
    assert parts.present(answer) == 2  # one in the chunk of 0-3, one of the two not converted
    assert parts.buffered == 6


# --- rows waiting for their part ----------------------------------------------------------


def test_rows_waiting_for_their_part_are_encoded_a_row_group_at_a_time(tmp_path):
    """A writer holds less than a row group's worth of rows as Arrow columns or tuples: the
    rest of a part waiting for its commit is Parquet already (~33 bytes a row where columns
    took ~147: docs/performance.md, "Issue 25, fifth session"). Counting, the ids and the
    committed part see every row, in order, in row groups of ROW_GROUP_ROWS."""
    parts = writer(tmp_path / "results", RESULTS)
    total = ROW_GROUP_ROWS * 2 + 100
    rows = [result_row(f"r{i}", None if i % 3 == 0 else f"answer {i}") for i in range(total)]
    for row in rows:
        parts.add(row)
    assert parts.buffered == total
    assert parts.present(1) == sum(row[1] is not None for row in rows)
    held = parts.take()
    assert sum(chunk.num_rows for chunk in held.chunks) + len(held.rows) < ROW_GROUP_ROWS
    assert len(held) == total and list(held.ids()) == [row[0] for row in rows]
    assert parts.commit(held) == []
    [path] = part_paths(tmp_path / "results")
    groups = pq.ParquetFile(path).metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [
        ROW_GROUP_ROWS,
        ROW_GROUP_ROWS,
        100,
    ]
    table = read_parts(tmp_path / "results")
    assert table.column("id").to_pylist() == [row[0] for row in rows]
    assert table.column("content").to_pylist() == [row[1] for row in rows]
    assert parts.committed_rows == total


def test_rows_given_back_by_a_failed_commit_go_first_as_a_part_of_their_own(tmp_path, monkeypatch):
    """A commit that fails gives its rows back, encoded whole; the next commit writes them
    before the rows added since, each set as one part. If only the first of those parts is
    written before the disk fills again, only the second is given back: no row twice."""
    folder = tmp_path / "results"
    parts = writer(folder, RESULTS, prefix="S")
    first = [result_row(f"a{i}") for i in range(ROW_GROUP_ROWS + 5)]
    for row in first:
        parts.add(row)
    held = parts.take()
    full_disk(monkeypatch, room=100)
    with pytest.raises(StoreError):
        parts.commit(held)
    parts.give_back(held)
    # Answers that do not compress: this part is larger than the given-back one.
    later = [result_row(f"b{i}", hashlib.sha256(b"%d" % i).hexdigest()) for i in range(3000)]
    for row in later:
        parts.add(row)
    assert parts.buffered == len(first) + len(later)
    assert parts.present(1) == len(first) + len(later)

    held = parts.take()
    first_part = held.files[0].data.size
    full_disk(monkeypatch, room=first_part + 1)  # room for the given-back part only
    with pytest.raises(StoreError):
        parts.commit(held)
    assert read_parts(folder).column("id").to_pylist() == [row[0] for row in first]
    parts.give_back(held)
    assert parts.buffered == len(later)

    monkeypatch.undo()
    assert parts.commit(parts.take()) == []
    assert read_parts(folder).column("id").to_pylist() == [row[0] for row in first + later]
    assert [len(pq.read_table(p)) for p in part_paths(folder)] == [len(first), len(later)]
    assert parts.committed_rows == len(first) + len(later)
