"""The output directory: the lock, job.json, committed part files and the resume state.

    OUTDIR/
      job.json          resolved settings + fingerprint
      results/*.parquet committed result parts (each id at most once)
      errors/*.parquet  committed error parts (an append-only log)
      summary.json      the last run's figures
      run.log           one line per event
      .lock             flock'ed while a run is active; never removed

A part appears under its final name only when complete: it is written to a
hidden temp name (which pyarrow.dataset ignores), fsynced, renamed, and the
directory fsynced. So a reader, or the next run after a kill -9, only ever sees
whole files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import JobError, LockedError, StoreError
from .job import FINGERPRINTED, Job, json_field_spec
from .outcome import Failure, Success
from .source import InputFiles

UTC_MS = pa.timestamp("ms", tz="UTC")

RESULT_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("content", pa.string()),
    pa.field("reasoning_content", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("model", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("request_id", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("latency_ms", pa.int32()),
    pa.field("completed_at", UTC_MS),
]

ERROR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("error_code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("retryable", pa.bool_()),
        pa.field("failed_at", UTC_MS),
    ]
)

JSON_FIELD_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}


def result_schema(job: Job, keep_types: dict[str, pa.DataType]) -> pa.Schema:
    """The fixed result schema of a job: the base columns, then label/json, then keep_columns."""
    fields = list(RESULT_FIELDS)
    if job.choices:
        fields.append(pa.field("label", pa.string()))
    if job.response_format == "json_object":
        fields.append(pa.field("json", pa.string()))
        for spec in job.json_fields:
            name, kind = json_field_spec(spec)
            fields.append(pa.field(name, JSON_FIELD_TYPES[kind]))
    for name in job.keep_columns:
        fields.append(pa.field(name, keep_types.get(name, pa.string())))
    return pa.schema(fields)


def infer_type(value: Any) -> pa.DataType:
    """The column type for a keep column read from JSON, decided by its first value."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def keep_caster(kind: pa.DataType) -> Any:
    """A function that fits a JSON value to a keep column's type (None when it cannot)."""
    if pa.types.is_string(kind):
        return lambda v: v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    if pa.types.is_boolean(kind):
        return lambda v: v if isinstance(v, bool) else None
    if pa.types.is_integer(kind):
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None
    if pa.types.is_floating(kind):
        return lambda v: (
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
        )
    return lambda v: v  # Parquet input: the value already has the column's type


def keep_column_types(job: Job, inputs: InputFiles) -> dict[str, pa.DataType]:
    """Keep-column types: fixed by the first committed part, else the input's schema."""
    committed = part_files(Path(job.output_dir) / "results")
    if committed:
        schema = pq.read_schema(committed[0])
        return {n: schema.field(n).type for n in job.keep_columns if n in schema.names}
    types = inputs.arrow_types()
    if types:
        return {name: types[name] for name in job.keep_columns if name in types}
    first = next((row.data for row in inputs.rows() if row.data is not None), {})
    return {name: infer_type(first.get(name)) for name in job.keep_columns}


def result_row(row_id: str, answer: Success, attempts: int, tail: list[Any]) -> tuple[Any, ...]:
    """A result row in RESULT_FIELDS order; ``tail`` holds label/json/keep values in order."""
    return (
        row_id,
        answer.content,
        answer.reasoning_content,
        answer.finish_reason,
        answer.model,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.total_tokens,
        answer.cached_tokens,
        answer.request_id,
        attempts,
        answer.latency_ms,
        now_ms(),
        *tail,
    )


def error_row(
    row_id: str, failure: Failure, attempts: int, retryable: bool, message: str
) -> tuple[Any, ...]:
    """An error row in ERROR_SCHEMA order (``message`` already redacted)."""
    return (
        row_id,
        failure.error_type,
        failure.status_code,
        failure.error_code,
        message,
        attempts,
        retryable,
        now_ms(),
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the lock -------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(outdir: Path) -> Iterator[None]:
    """Hold the kernel lock on OUTDIR/.lock; a crashed holder's lock goes with its process."""
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / ".lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise LockedError(
                f"another zbatch run holds {path} ({holder}); wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{dt.datetime.now().astimezone().isoformat(timespec='seconds')}\n"
        )
        handle.flush()
        yield
    finally:
        handle.close()


# --- atomic files ---------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Any, *, opener: Any = open) -> None:
    """Write a file by ``write(handle)`` into a hidden temp name, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with opener(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not isinstance(exc, OSError):
            raise
        raise StoreError(
            f"could not write {path}: {exc.strerror or exc}. Parts committed earlier are intact; "
            "free space or fix the disk, then run the same command to resume"
        ) from exc


def write_json(path: Path, data: dict[str, Any]) -> None:
    blob = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    write_atomic(path, lambda handle: handle.write(blob))


# --- part files -----------------------------------------------------------------------------


class PartWriter:
    """Buffers rows of one table and commits them as numbered part files."""

    def __init__(self, folder: Path, schema: pa.Schema, *, stamp: str) -> None:
        self.folder = folder
        self.schema = schema
        self.rows: list[tuple[Any, ...]] = []
        self._stamp = stamp
        self._seq = 0
        self.committed_rows = 0
        self.open_file: Any = open  # tests inject a failing opener here

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows.append(row)

    def take(self) -> list[tuple[Any, ...]]:
        """Hand over the buffered rows (the caller commits them)."""
        rows, self.rows = self.rows, []
        return rows

    def commit(self, rows: Sequence[tuple[Any, ...]]) -> Path | None:
        """Write rows as one part file, atomically; blocking (run it in a worker thread)."""
        if not rows:
            return None
        columns = list(zip(*rows, strict=True))
        arrays = [
            pa.array(column, type=f.type) for column, f in zip(columns, self.schema, strict=True)
        ]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._seq += 1
        path = self.folder / f"part-{self._stamp}-{self._seq:05d}.parquet"
        write_atomic(path, lambda handle: pq.write_table(table, handle), opener=self.open_file)
        self.committed_rows += len(rows)
        return path


def part_files(folder: Path) -> list[Path]:
    """Committed parts in commit order (hidden temp files are not parts)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet"))


# Read a part's row groups one by one as they are needed (pre-buffering fetches the column
# chunks of many at once: +10-15 MB reading the ids of a compacted million-row part).
_ONE_AT_A_TIME = ds.ParquetFragmentScanOptions(pre_buffer=False)


class Parts:
    """The committed parts of one folder, read in commit order, a batch at a time.

    A part that cannot be read is a StoreError naming the file, wherever the reading happens
    (even inside a write, where it must not pass for a write error).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = part_files(folder)
        with self._reading():
            # A dataset made from a list of files reads them in that order.
            self._dataset = ds.dataset([str(f) for f in self.files], format="parquet")
        self.schema: pa.Schema = self._dataset.schema

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Up to 32k rows at a time, part after part, with no read-ahead (by default a scan
        buffers several parts' batches: +110 MB when merging a million rows)."""
        for part in self._dataset.get_fragments():
            with self._reading(Path(part.path)):
                yield from part.to_batches(
                    schema=self.schema,
                    columns=columns,
                    batch_size=32_768,
                    batch_readahead=1,
                    use_threads=False,
                    fragment_scan_options=_ONE_AT_A_TIME,
                )

    def column(self, name: str, kind: pa.DataType) -> pa.ChunkedArray:
        return pa.chunked_array([batch.column(0) for batch in self.batches([name])], kind)

    def count_rows(self) -> int:
        with self._reading():
            return int(self._dataset.count_rows())

    @contextlib.contextmanager
    def _reading(self, part: Path | None = None) -> Iterator[None]:
        try:
            yield
        except (pa.ArrowException, OSError) as exc:
            where = part or f"a part in {self.folder}"
            reason = " ".join(str(exc).split())  # Arrow's messages span lines
            raise StoreError(
                f"{where} cannot be read ({reason}); if it is damaged, move it out of "
                f"{self.folder} and run again: a run sends its rows again"
            ) from None


# --- resume state ---------------------------------------------------------------------------


@dataclass
class ResumeState:
    """What earlier runs already settled, keyed by id."""

    succeeded: set[str] = field(default_factory=set)
    latest_error: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (type, retry)
    duplicates_logged: set[str] = field(default_factory=set)

    def is_done(self, row_id: str, *, retry_failed: bool = False) -> bool:
        if row_id in self.succeeded:
            return True
        latest = self.latest_error.get(row_id)
        if latest is None or latest[1]:
            return False
        return not retry_failed

    @property
    def failed(self) -> int:
        return sum(
            1 for i, (_, r) in self.latest_error.items() if not r and i not in self.succeeded
        )


def load_state(outdir: Path) -> ResumeState:
    """Read only the id-level columns of the committed parts, a slice at a time.

    A million ids become a million Python strings in ``succeeded`` (~95 MB with the set);
    reading them slice by slice keeps Arrow's copy to one slice, not all of them (-40 MB).
    """
    state = ResumeState()
    for batch in Parts(outdir / "results").batches(["id"]):
        state.succeeded.update(batch.column(0).to_pylist())
    for batch in Parts(outdir / "errors").batches(["id", "error_type", "retryable"]):
        ids, types, flags = (batch.column(i).to_pylist() for i in range(3))
        for row_id, kind, retryable in zip(ids, types, flags, strict=True):
            if kind == "duplicate_id":
                state.duplicates_logged.add(row_id)
            else:
                state.latest_error[row_id] = (kind, bool(retryable))
    return state


# --- job.json -------------------------------------------------------------------------------


def prepare(outdir: Path, job: Job, *, force: bool) -> str | None:
    """Check job.json against the job; with --force archive the old outputs.

    Returns a message to tell the user when a new generation was started.
    """
    path = outdir / "job.json"
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"{path} is unreadable ({exc}); move it away or use a new OUTDIR") from None
    if previous.get("fingerprint") == job.fingerprint():
        return None
    settings = job.to_json()
    changed = [
        name for name in FINGERPRINTED if previous.get("settings", {}).get(name) != settings[name]
    ]
    if not force:
        what = ", ".join(changed) or "request settings"
        raise JobError(
            f"{outdir} holds results of a different request ({what} changed). "
            "Use a new output directory, or --force to start a new generation of results here"
        )
    archive = outdir / "generations" / dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    archive.mkdir(parents=True)
    for name in ("results", "errors", "job.json", "summary.json"):
        if (outdir / name).exists():
            shutil.move(str(outdir / name), str(archive / name))
    fsync_dir(outdir)
    return f"request settings changed: previous outputs moved to {archive}; starting afresh"


def save_job(outdir: Path, job: Job, keep_types: dict[str, pa.DataType]) -> None:
    settings = job.to_json()
    data = {
        "fingerprint": job.fingerprint(),
        "settings": settings,
        "keep_types": {name: str(t) for name, t in keep_types.items()},
        "api_key_env": job.api_key_env,
    }
    write_json(outdir / "job.json", data)


def read_job_json(outdir: Path) -> dict[str, Any]:
    path = outdir / "job.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"{outdir} is not a zbatch output directory (no job.json)") from None
    except ValueError as exc:
        raise JobError(f"{path} is unreadable: {exc}") from None
    return data


def tidy(outdir: Path) -> None:
    """Under the lock: finish an interrupted compaction and drop temp files a crash left."""
    for name in ("results", "errors"):
        folder = outdir / name
        if not folder.is_dir():
            continue
        recover(folder)
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink()


# --- compaction -----------------------------------------------------------------------------

JOURNAL = ".compact-journal.json"


def compact(outdir: Path) -> list[tuple[str, int, int]]:
    """Merge each folder's parts into one, committed before the old parts are removed.

    The merged file takes the name of the last part (so the commit order of the
    error log is kept); a journal lists the parts it replaces, so a crash between
    the commit and the removals is finished by :func:`recover`.
    """
    report = []
    for name in ("results", "errors"):
        folder = outdir / name
        recover(folder)
        parts = Parts(folder)
        if len(parts.files) < 2:
            report.append((name, len(parts.files), len(parts.files)))
            continue
        target = parts.files[-1]
        journal = {
            "replaced_by": target.name,
            "rows": parts.count_rows(),
            "remove": [p.name for p in parts.files[:-1]],
        }
        write_json(folder / JOURNAL, journal)
        write_atomic(target, lambda handle, p=parts: write_batches(p.schema, p.batches(), handle))
        recover(folder)
        report.append((name, len(parts.files), 1))
    return report


def write_batches(schema: pa.Schema, batches: Iterator[pa.RecordBatch], handle: Any) -> None:
    """One Parquet file from batches as they come: merging or exporting a million rows holds
    one batch, not the table."""
    with pq.ParquetWriter(handle, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def recover(folder: Path) -> None:
    """Finish an interrupted compaction: remove the parts its merged file already holds."""
    journal = folder / JOURNAL
    if not journal.exists():
        return
    data = json.loads(journal.read_text(encoding="utf-8"))
    target = folder / data["replaced_by"]
    merged_rows = pq.ParquetFile(target).metadata.num_rows if target.exists() else 0
    if merged_rows == data["rows"]:  # the merged part was committed: the old ones must go
        for name in data["remove"]:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
    journal.unlink()
    fsync_dir(folder)
