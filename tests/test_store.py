"""The output directory: result schema, atomic part files, resume state, compaction, the lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import SPEC_ERROR_COLUMNS, SPEC_RESULT_COLUMNS

from zbatch.errors import LockedError, StoreError
from zbatch.job import Job
from zbatch.store import (
    ERROR_SCHEMA,
    JOURNAL,
    PartWriter,
    compact,
    infer_type,
    keep_caster,
    load_state,
    locked,
    part_files,
    recover,
    result_schema,
    write_atomic,
)

UTC_MS = pa.timestamp("ms", tz="UTC")
T0 = 1_760_000_000_000  # a completed_at / failed_at in ms


def job(**settings: Any) -> Job:
    return Job(input_path="/in/rows.jsonl", output_dir="/out", **settings)


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
    }
    values.update(fields)
    return tuple(values[name] for name, _ in SPEC_RESULT_COLUMNS)


def error_row(row_id: str, error_type: str, retryable: bool, message: str = "m") -> tuple:
    status = 429 if retryable else 400
    return (row_id, error_type, status, None, message, 1, retryable, T0)


def write_parts(
    folder: Path, schema: pa.Schema, batches: list[list[tuple]], stamp="20260101T000000.000"
):
    """Commit each batch as one part, the way the runner does; returns the part paths."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = PartWriter(folder, schema, stamp=stamp)
    return [writer.commit(batch) for batch in batches]


RESULTS = pa.schema([pa.field(n, t) for n, t in SPEC_RESULT_COLUMNS])


def read_parts(folder: Path) -> pa.Table:
    """Every committed part of a folder as one table, in commit order."""
    return ds.dataset([str(p) for p in part_files(folder)], format="parquet").to_table()


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
    assert path is not None
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
    writer = PartWriter(tmp_path, RESULTS, stamp="s")
    assert writer.commit([]) is None
    assert list(tmp_path.iterdir()) == []


def test_parts_are_numbered_in_commit_order_and_counted(tmp_path):
    paths = write_parts(tmp_path, RESULTS, [[result_row(str(i))] for i in range(12)], stamp="S")
    assert [p.name for p in paths] == [f"part-S-{i:05d}.parquet" for i in range(1, 13)]
    assert part_files(tmp_path) == paths


def test_hidden_temp_files_are_not_parts(tmp_path):
    write_parts(tmp_path, RESULTS, [[result_row("a")]])
    (tmp_path / ".part-x-00002.parquet.tmp").write_bytes(b"half a file")
    assert [p.name for p in part_files(tmp_path)] == ["part-20260101T000000.000-00001.parquet"]
    table = read_parts(tmp_path)
    assert table is not None
    assert table.column("id").to_pylist() == ["a"]


class FullDisk:
    """An opener whose file fails with ENOSPC after ``room`` bytes, like a full disk."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.opened: list[Path] = []

    def __call__(self, path: Path, mode: str) -> Any:
        self.opened.append(Path(path))
        return _FullFile(open(path, mode), self.room)  # closed by _FullFile


class _FullFile:
    def __init__(self, handle: Any, room: int) -> None:
        self._handle = handle
        self._room = room
        self.closed = False

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._handle.write(bytes(data)[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self.closed = True
        self._handle.close()

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_write_atomic_on_a_full_disk_leaves_no_temp_file_and_raises_a_clear_store_error(tmp_path):
    target = tmp_path / "summary.json"
    opener = FullDisk(room=10)
    with pytest.raises(StoreError) as caught:
        write_atomic(target, lambda handle: handle.write(b"x" * 100), opener=opener)
    message = str(caught.value)
    assert str(target) in message
    assert os.strerror(errno.ENOSPC) in message  # "No space left on device"
    assert "run the same command to resume" in message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    # It was writing to a hidden temp name, which is gone; the target was never created.
    assert opener.opened == [tmp_path / ".summary.json.tmp"]
    assert list(tmp_path.iterdir()) == []


def test_a_part_commit_on_a_full_disk_leaves_earlier_parts_intact_and_no_temp_file(tmp_path):
    folder = tmp_path / "results"
    writer = PartWriter(folder.resolve(), RESULTS, stamp="S")
    folder.mkdir()
    first = writer.commit([result_row("a")])
    writer.open_file = FullDisk(room=100)  # fails inside pyarrow's write, mid-file
    with pytest.raises(StoreError, match=r"part-S-00002\.parquet"):
        writer.commit([result_row(str(i), "x" * 200) for i in range(50)])
    assert sorted(p.name for p in folder.iterdir()) == [first.name]
    table = read_parts(folder)
    assert table is not None
    assert table.column("id").to_pylist() == ["a"]
    assert writer.committed_rows == 1


def test_write_atomic_replaces_the_target_whole(tmp_path):
    target = tmp_path / "job.json"
    target.write_text("old")
    write_atomic(target, lambda handle: handle.write(b"new"))
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


# --- resume state ---------------------------------------------------------------------------


def test_an_output_directory_without_parts_has_an_empty_state(tmp_path):
    state = load_state(tmp_path)
    assert state.succeeded == set()
    assert state.latest_error == {}
    assert not state.is_done("anything")


def test_ids_in_results_are_done_even_with_retry_failed(tmp_path):
    write_parts(
        tmp_path / "results", RESULTS, [[result_row("a"), result_row("b")], [result_row("c")]]
    )
    state = load_state(tmp_path)
    assert state.succeeded == {"a", "b", "c"}
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
    assert state.failed == 2


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


def test_a_part_that_cannot_be_read_stops_the_resume_naming_the_file(tmp_path):
    outdir = tmp_path / "out"
    parts = write_parts(
        outdir / "results", RESULTS, [[result_row("a")], [result_row("b")], [result_row("c")]]
    )
    damaged = bytearray(parts[1].read_bytes())
    damaged[4:40] = b"\xff" * 36  # the first data page; the footer still reads
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match=rf"{parts[1]} cannot be read .*run again"):
        load_state(outdir)


# --- compaction -----------------------------------------------------------------------------


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


def test_compact_merges_each_folder_into_one_part_with_every_row_once_in_order(tmp_path):
    outdir = make_outdir(tmp_path)
    results_before = read_parts(outdir / "results")
    errors_before = read_parts(outdir / "errors")
    last_result = part_files(outdir / "results")[-1].name
    state_before = load_state(outdir)

    report = compact(outdir)

    assert report == [("results", 3, 1), ("errors", 3, 1)]
    [merged] = part_files(outdir / "results")
    assert merged.name == last_result  # the merged part takes the last part's name
    results_after = read_parts(outdir / "results")
    assert results_after.to_pylist() == results_before.to_pylist()
    ids = results_after.column("id").to_pylist()
    assert ids == [f"r{i}" for i in range(9)]
    assert len(part_files(outdir / "errors")) == 1
    # The error log keeps its order, so the latest error still wins.
    assert read_parts(outdir / "errors").to_pylist() == errors_before.to_pylist()
    state_after = load_state(outdir)
    assert state_after.latest_error == state_before.latest_error
    assert state_after.latest_error["e1"] == ("content_filter", False)
    assert state_after.succeeded == state_before.succeeded
    # No journal or temp file is left behind.
    for folder in ("results", "errors"):
        assert sorted(p.name for p in (outdir / folder).iterdir()) == [
            p.name for p in part_files(outdir / folder)
        ]


def test_compact_leaves_a_single_part_or_no_part_alone(tmp_path):
    outdir = tmp_path / "out"
    [only] = write_parts(outdir / "results", RESULTS, [[result_row("a")]])
    before = only.read_bytes()
    assert compact(outdir) == [("results", 1, 1), ("errors", 0, 0)]
    assert only.read_bytes() == before


def test_compact_twice_changes_nothing_the_second_time(tmp_path):
    outdir = make_outdir(tmp_path)
    compact(outdir)
    table = read_parts(outdir / "results")
    assert compact(outdir) == [("results", 1, 1), ("errors", 1, 1)]
    assert read_parts(outdir / "results").to_pylist() == table.to_pylist()


def simulate_crash(folder: Path, *, merged_committed: bool) -> list[Path]:
    """Leave a folder as a compaction killed after the journal (and maybe the merge) was written."""
    parts = part_files(folder)
    table = read_parts(folder)
    journal = {
        "replaced_by": parts[-1].name,
        "rows": table.num_rows,
        "remove": [p.name for p in parts[:-1]],
    }
    (folder / JOURNAL).write_text(json.dumps(journal))
    if merged_committed:
        pq.write_table(table, parts[-1])
    return parts


def test_recover_after_the_merged_part_was_committed_removes_the_old_parts(tmp_path):
    outdir = make_outdir(tmp_path)
    folder = outdir / "results"
    expected = read_parts(folder).to_pylist()
    parts = simulate_crash(folder, merged_committed=True)
    # Before recovery the merged part and the old parts both hold the early rows.
    assert read_parts(folder).num_rows == 2 * len(expected) - 3

    recover(folder)

    assert part_files(folder) == [parts[-1]]
    assert not (folder / JOURNAL).exists()
    assert read_parts(folder).to_pylist() == expected


def test_recover_before_the_merged_part_was_committed_keeps_every_part(tmp_path):
    outdir = make_outdir(tmp_path)
    folder = outdir / "results"
    expected = read_parts(folder).to_pylist()
    parts = simulate_crash(folder, merged_committed=False)

    recover(folder)

    assert part_files(folder) == parts  # nothing was removed: the rows exist only there
    assert not (folder / JOURNAL).exists()
    assert read_parts(folder).to_pylist() == expected


def test_recover_finishes_removals_that_were_half_done(tmp_path):
    outdir = make_outdir(tmp_path)
    folder = outdir / "errors"
    expected = read_parts(folder).to_pylist()
    parts = simulate_crash(folder, merged_committed=True)
    parts[0].unlink()  # the crash came after the first removal

    recover(folder)

    assert part_files(folder) == [parts[-1]]
    assert read_parts(folder).to_pylist() == expected


def test_recover_without_a_journal_does_nothing(tmp_path):
    outdir = make_outdir(tmp_path)
    parts = part_files(outdir / "results")
    recover(outdir / "results")
    assert part_files(outdir / "results") == parts


def test_compact_after_a_crashed_compaction_ends_with_every_id_once(tmp_path):
    outdir = make_outdir(tmp_path)
    expected = read_parts(outdir / "results").to_pylist()
    simulate_crash(outdir / "results", merged_committed=True)
    compact(outdir)
    assert len(part_files(outdir / "results")) == 1
    assert read_parts(outdir / "results").to_pylist() == expected


def test_compact_stops_on_a_part_it_cannot_read_and_keeps_every_part(tmp_path):
    outdir = make_outdir(tmp_path)
    folder = outdir / "results"
    parts = part_files(folder)
    before = [p.read_bytes() for p in parts]
    damaged = bytearray(before[1])
    damaged[4:40] = b"\xff" * 36  # the first data page; the footer still reads
    parts[1].write_bytes(bytes(damaged))

    with pytest.raises(StoreError, match=rf"{parts[1].name} cannot be read .*move it out of"):
        compact(outdir)

    recover(folder)  # what the next run does first
    assert part_files(folder) == parts
    assert parts[0].read_bytes() == before[0] and parts[2].read_bytes() == before[2]
    assert sorted(p.name for p in folder.iterdir()) == [p.name for p in parts]  # no leftovers


# --- the lock -------------------------------------------------------------------------------


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


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from zbatch.store import locked
    with locked(Path(sys.argv[1])):
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
    from zbatch.store import tidy

    results = tmp_path / "results"
    results.mkdir()
    leftover = results / ".part-x-00001.parquet.tmp"
    leftover.write_bytes(b"half a file")
    kept = results / "part-x-00000.parquet"
    pq.write_table(pa.table({"id": ["a"]}), kept)
    tidy(tmp_path)
    assert not leftover.exists()
    assert kept.exists()
