"""The answer journal: every answer durable within ~50 ms, long before a part commits it.

    OUTDIR/journal/{run prefix}-{n:05d}.journal    segment n: rows added since part commit n-1

A part commit is the committed truth, but it comes every ``part_seconds``; an answer received
in between would be bought again after a kill -9. So each row is also appended to the open
journal segment, and every ~50 ms one write and one fsync make the window's rows durable
(group commit: one fsync per window, never one per row). A part commit seals the segment;
once the parts and the spend ledger are written, sealed segments are deleted.

The next run replays what a killed run left (:func:`replay`, before anything is sent): rows
whose outcome is not in the committed parts yet are committed as a part of their own, the
segment's spend is added to the ledger once (the ledger names the segments it holds), then the
segment goes. Each step checks what is already there, so a replay killed half-way is finished
by the next one, exactly once.

A segment is a sequence of frames: ``b"ZJ"``, a kind byte, length and CRC-32 of the payload.
Kinds: result rows and error rows (each an Arrow IPC stream, so every value keeps its exact
type), and the segment's spend so far (JSON). A frame that does not read whole (torn by a crash
mid-write, or damaged on disk) is skipped up to the next whole frame, and the segment is kept
in journal/damaged/ with a warning naming it, the bytes skipped and the answers at risk.

The next owner of an id replays it, whoever wrote the journal (a whole run, a shard of any
split, a cluster task): see :func:`replay` and :mod:`zbatch.store.ownership`. Workers wait
while MAX_UNSYNCED answers are not yet durable, so a slow fsync never widens the window.

Object storage has no append: there the journal lives in a local folder named after the
OUTDIR URL and a token kept in the OUTDIR (:func:`local_folder`), so it protects a run from a
kill -9 of the process on the same machine, not from the loss of the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from ..budget import Spend
from ..errors import StoreError
from ..shard import shard_of
from .layout import ERRORS, RESULTS, shard_tag
from .ownership import WHOLE, Share, lock_name, share_of_tag
from .parts import part_name
from .storage import fsync_dir, store_error

if TYPE_CHECKING:
    from .outdir import OutputDir
    from .parts import PartWriter

SUFFIX = ".journal"
DAMAGED = "damaged"  # journal/damaged/: segments that could not be read whole, kept aside
WINDOW = 0.05  # seconds between group commits
# Answers received but not yet durable beyond which workers wait before sending more: on slow
# storage (an fsync of 0.3 s) the answers a kill -9 can cost stay this many plus those in
# flight, whatever the fsync takes (docs/performance.md "The journal window").
MAX_UNSYNCED = 256
_FRAME = struct.Struct("<2sBII")
_MAGIC = b"ZJ"
_KIND_TABLES = {1: RESULTS, 2: ERRORS}
_KIND_SPEND = 3
_TABLE_KINDS = {table: kind for kind, table in _KIND_TABLES.items()}


Row = tuple[Any, ...]
Taken = tuple[int, dict[str, list[Row]], Spend]  # a segment's rows and spend not yet written


def local_folder(key: str) -> Path:
    """Where the journal of an OUTDIR that is not on a local disk is kept (``key`` names it)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache / "zbatch" / "journal" / digest


class Journal:
    """A run's journal: rows and spend in, one durable segment per part commit.

    With ``folder=None`` nothing is written (``--no-journal``), but the spend still reaches
    the ledger at each part commit."""

    def __init__(
        self,
        folder: Path | None,
        prefix: str,
        writers: dict[str, PartWriter],
        *,
        ledger: Spend,
        save_ledger: Callable[[Spend], None],
        read_total: Callable[[], Spend | None],
    ) -> None:
        self.folder = folder
        self.ledger = ledger
        self._prefix = prefix
        self._writers = writers
        self._save_ledger = save_ledger
        self._read_total = read_total
        self._segment = 0
        self._rows: dict[str, list[Row]] = {table: [] for table in writers}
        self._spend = Spend()  # the open segment's
        self._dirty = False
        self._sealed: list[tuple[str, Spend]] = []
        self._handle: tuple[int, BinaryIO] | None = None  # the segment's file being appended
        self._lock = anyio.Lock()
        self.unsynced = 0  # rows recorded, not yet durable (in the journal or a part)
        self._synced = anyio.Event()

    def name(self, segment: int) -> str:
        return f"{self._prefix}-{segment:05d}{SUFFIX}"

    def record(self, table: str, row: Row) -> None:
        self._rows[table].append(row)
        self._dirty = True
        self.unsynced += 1

    async def room(self) -> None:
        """Wait while MAX_UNSYNCED answers or more wait for their group commit (back-pressure:
        the journal window stays bounded in answers whatever the fsync latency)."""
        while self.folder is not None and self.unsynced >= MAX_UNSYNCED:
            await self._synced.wait()

    def charge(self, answer: Any, usd: float) -> None:
        """A billed answer (anything with the usage fields of a Success) costing ``usd``."""
        self._spend.count(answer, usd)
        self._dirty = True

    async def run(self) -> None:
        """Group commit every WINDOW seconds until cancelled."""
        while True:
            await anyio.sleep(WINDOW)
            await self.sync()

    async def sync(self) -> None:
        """Make what was recorded so far durable (one write, one fsync)."""
        async with self._lock:
            if self._dirty:
                await self._write(self._take())

    def seal(self) -> Taken:
        """End the segment at once: everything recorded so far is about to be taken into
        parts (the caller takes the buffers right after, with no wait in between, so a part
        never outgrows part_rows). Returns what was not yet written, for :meth:`keep`."""
        taken = self._take()
        self._durable(taken[1])  # the part commit makes them durable, or keep() writes them
        self._sealed.append((self.name(self._segment), self._spend))
        self._segment += 1
        self._spend = Spend()
        return taken

    async def keep(self, taken: Taken) -> None:
        """The parts did not take a sealed segment's rows: write its rest after all."""
        async with self._lock:
            await self._append_frames(*taken)

    async def settle(self) -> None:
        """The sealed segments' rows are in committed parts: record their spend, drop them."""
        if not self._sealed:
            return
        sealed, self._sealed = self._sealed, []
        try:
            # The ledger keeps naming the segments it holds while they exist (another run may
            # replay what is left of a killed run's segment: its spend must not count again).
            kept = [n for n in self.ledger.journals if self._may_remain(n)]
            ledger = replace(self.ledger, journals=[*kept, *(name for name, _ in sealed)])
            for _, spend in sealed:
                ledger.add(spend)
            await anyio.to_thread.run_sync(self._save_ledger, ledger)
        except BaseException:
            self._sealed[:0] = sealed
            raise
        self.ledger = ledger
        if self.folder is not None:
            for name, _ in sealed:
                with contextlib.suppress(FileNotFoundError):
                    (self.folder / name).unlink()

    def _may_remain(self, name: str) -> bool:
        """Whether segment ``name`` may still be replayed (it exists, or no folder to tell)."""
        return self.folder is None or (self.folder / name).exists()

    async def spent(self) -> float:
        """USD the OUTDIR has cost so far: every ledger (other shards' too, as of their last
        part commit) and what this run spent since its own."""
        total = await anyio.to_thread.run_sync(self._read_total)
        return (0.0 if total is None else total.usd) + self.unsettled()

    def unsettled(self) -> float:
        """USD this run was charged that its spend ledger does not hold yet."""
        return sum(spend.usd for _, spend in self._sealed) + self._spend.usd

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle[1], None
            # Every write is flushed at once: only one that failed, and so already stopped the
            # run (exit 74), leaves bytes behind to flush here. They would be a torn last
            # frame, which a replay ignores; the file is closed all the same.
            with contextlib.suppress(OSError):
                handle.close()

    def _take(self) -> Taken:
        rows, self._rows = self._rows, {table: [] for table in self._rows}
        self._dirty = False
        return self._segment, rows, replace(self._spend)

    async def _write(self, taken: Taken) -> None:
        segment, rows, spend = taken
        try:
            await self._append_frames(segment, rows, spend)
        finally:
            self._durable(rows)

    def _durable(self, rows: dict[str, list[Row]]) -> None:
        """``rows`` are durable (or the run is stopping on a write error): wake the waiters."""
        self.unsynced -= sum(len(table_rows) for table_rows in rows.values())
        self._synced.set()
        self._synced = anyio.Event()

    async def _append_frames(self, segment: int, rows: dict[str, list[Row]], spend: Spend) -> None:
        if self.folder is None:  # --no-journal
            return
        # Encoded here, only the write and fsync in a thread: the encoding holds the GIL
        # anyway, and a thread doing it would trade the GIL with the event loop, row by row
        # (bench/throughput.py, zbatch against zbatch-nojournal: ~8 µs of CPU per row -> ~3).
        frames = []
        for table, table_rows in rows.items():
            if table_rows:
                arrow, _unstorable = self._writers[table].to_table(table_rows)
                frames.append(_frame(_TABLE_KINDS[table], _ipc(arrow)))
        frames.append(_frame(_KIND_SPEND, json.dumps(spend.to_json()).encode()))
        await anyio.to_thread.run_sync(self._append, segment, b"".join(frames))

    def _append(self, segment: int, data: bytes) -> None:
        assert self.folder is not None
        path = self.folder / self.name(segment)
        try:
            handle = self._open(segment, path)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            raise store_error(f"the answer journal {path}", exc) from exc

    def _open(self, segment: int, path: Path) -> BinaryIO:
        """The segment's file, kept open across windows (the last segment's is closed)."""
        if self._handle is not None and self._handle[0] == segment:
            return self._handle[1]
        self.close()
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "ab")  # noqa: SIM115 - kept open across windows
        self._handle = (segment, handle)
        fsync_dir(self.folder)
        return handle


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _frame(kind: int, payload: bytes) -> bytes:
    return _FRAME.pack(_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


@dataclass
class Scan:
    """What a segment holds: its whole frames, and the bytes that could not be read."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    skipped: int = 0  # bytes in damaged frames (a torn last frame included)


def scan(data: bytes) -> Scan:
    """The whole frames of a segment, in order. A damaged frame (bad magic, length or CRC)
    is skipped up to the next frame that reads whole, so one bad frame costs only its own
    rows; the bytes skipped are counted."""
    found = Scan()
    offset = 0
    while offset < len(data):
        frame = _frame_at(data, offset)
        if frame is None:
            following = _next_frame(data, offset + 1)
            found.skipped += following - offset
            offset = following
            continue
        found.frames.append(frame)
        offset += _FRAME.size + len(frame[1])
    return found


def _frame_at(data: bytes, offset: int) -> tuple[int, bytes] | None:
    if offset + _FRAME.size > len(data):
        return None
    magic, kind, length, crc = _FRAME.unpack_from(data, offset)
    payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
    if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return kind, payload


def _next_frame(data: bytes, offset: int) -> int:
    """Where the next whole frame from ``offset`` starts; the end when none does."""
    while (offset := data.find(_MAGIC, offset)) != -1:
        if _frame_at(data, offset) is not None:
            return offset
        offset += 1
    return len(data)


def read_frames(path: Path) -> Iterator[tuple[int, bytes]]:
    """The whole frames of a segment, in order (damaged ones skipped: :func:`scan`)."""
    yield from scan(path.read_bytes()).frames


def journaled_rows(outdir: OutputDir, folder: Path) -> int:
    """Finished rows the journals in ``folder`` hold and the parts do not: received, not yet
    settled (a segment part-replayed, or a live run's whose earlier rows are committed,
    counts only the rest)."""
    paths = sorted(folder.glob(f"*{SUFFIX}"))
    if not paths:
        return 0
    seen = _committed_keys(outdir)
    total = 0
    for path in paths:
        for kind, payload in read_frames(path):
            table = _KIND_TABLES.get(kind)
            if table is not None:
                rows = pa.ipc.open_stream(payload).read_all()
                fresh, _ = _not_seen(rows, _KEY_COLUMNS[table], seen[table], _owner(WHOLE))
                total += 0 if fresh is None else fresh.num_rows
    return total


def _committed_keys(outdir: OutputDir) -> dict[str, set[Any]]:
    """The keys (:data:`_KEY_COLUMNS`) of every row the parts hold, by table."""
    return {
        table: {
            key
            for batch in outdir.parts(table).batches(columns)
            for key in zip(*(column.to_pylist() for column in batch.columns), strict=True)
        }
        for table, columns in _KEY_COLUMNS.items()
    }


def writer_share(name: str) -> Share | None:
    """The shard whose run wrote a journal segment ("{stamp}-{hex}[-{tag}]-{n}.journal")."""
    fields = name.removesuffix(SUFFIX).split("-")
    return share_of_tag(fields[2] if len(fields) == 4 else "")


class Replayed(NamedTuple):
    """What :func:`replay` did: the rows it committed, and a warning per damaged segment (for
    the run's log: the session opens before run.log does)."""

    rows: int = 0
    warnings: tuple[str, ...] = ()


def replay(outdir: OutputDir, folder: Path, shard: Share | None) -> Replayed:
    """Commit what the journals of killed runs hold for the ids this run owns and the parts
    do not have. Nothing is sent before this is done.

    Every journal is read whoever wrote it (a whole run, a shard of any split), except those
    of a writer still live (its shard's lock is held: it owns none of our ids and settles its
    journal itself). Rows of ids this run owns (``shard``; None: all) are committed, results
    matched by id (each id is in results/ at most once), error rows by id and time; rows of
    other ids wait for their owner's next run. A journal is deleted once the parts hold all
    its rows. Its spend goes to the ledger of the run that reads it first (each replay holds
    the segment's file lock, and the ledgers name the journals they hold). A damaged segment
    is reported and moved to journal/damaged/ once read."""
    share = shard or WHOLE
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return Replayed()
    except NotADirectoryError:
        raise StoreError(
            f"{folder} is a file, where zbatch keeps its answer journal: move it away, then "
            "run the same command"
        ) from None
    names = [name for name in names if _replayable(outdir, name, share)]
    if not names:
        return Replayed()
    seen = _committed_keys(outdir)
    owns = _owner(share)
    replayed = 0
    warnings: list[str] = []
    for name in names:
        with _segment_lock(folder / name) as data:
            if data is not None:
                rows, damage = _replay_segment(outdir, folder, name, data, share, owns, seen)
                replayed += rows
                warnings += [damage] if damage else []
    fsync_dir(folder)
    return Replayed(replayed, tuple(warnings))


def _replayable(outdir: OutputDir, name: str, share: Share) -> bool:
    """A journal this run may read: its own shard's (a killed run of it), or one whose
    writer's shard lock nobody holds (an unparseable name: the whole job's, to be safe)."""
    writer = writer_share(name) or WHOLE
    return writer == share or outdir.storage.holder(lock_name(writer)) is None


def _owner(share: Share) -> Callable[[Any], bool]:
    if share == WHOLE:
        return lambda _row_id: True
    index, count = share
    return lambda row_id: shard_of(str(row_id), count) == index


@contextlib.contextmanager
def _segment_lock(path: Path) -> Iterator[bytes | None]:
    """The segment's bytes, read under its file lock (None: another replay removed it)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        yield None
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if os.fstat(handle.fileno()).st_nlink == 0:  # replayed and removed meanwhile
            yield None
            return
        yield handle.read()


def _replay_segment(
    outdir: OutputDir,
    folder: Path,
    name: str,
    data: bytes,
    share: Share,
    owns: Callable[[Any], bool],
    seen: dict[str, set[Any]],
) -> tuple[int, str | None]:
    """The rows of one segment replayed, and the warning when it was damaged."""
    found = scan(data)
    tables: dict[str, list[pa.Table]] = {table: [] for table in _TABLE_KINDS}
    spend = Spend()
    damaged = found.skipped
    for kind, payload in found.frames:
        try:
            if kind == _KIND_SPEND:
                spend = Spend.from_json(json.loads(payload))
            elif kind in _KIND_TABLES:
                tables[_KIND_TABLES[kind]].append(pa.ipc.open_stream(payload).read_all())
        except (pa.ArrowException, ValueError, TypeError):
            damaged += _FRAME.size + len(payload)
    tag = shard_tag(None if share == WHOLE else share)
    if name not in (outdir.total_spend() or Spend()).journals:
        ledger = outdir.read_spend(tag)
        ledger.add(spend)
        ledger.journals = [*ledger.journals, name]
        outdir.write_spend(ledger, tag)
    stem = name.removesuffix(SUFFIX)
    prefix, segment = stem.rsplit("-", 1)
    replayed = waiting = read = 0
    for table, columns in _KEY_COLUMNS.items():
        if not tables[table]:
            continue
        rows = pa.concat_tables(tables[table])
        read += rows.num_rows
        fresh, waiting_here = _not_seen(rows, columns, seen[table], owns)
        waiting += waiting_here
        if fresh is None:
            continue
        # Each owner replays its own rows of a segment, into a part named after both.
        by = f".{tag}" if tag else ""
        part = f"{table}/{part_name(prefix, f'r{segment}{by}')}"
        outdir.storage.create(part, functools.partial(pq.write_table, fresh))
        replayed += fresh.num_rows
    if damaged:
        aside = folder / DAMAGED / name
        aside.parent.mkdir(exist_ok=True)
        os.replace(folder / name, aside)
        return replayed, (
            f"the answer journal {folder / name} is damaged: {damaged} bytes could not be "
            f"read, about {max(spend.answers - read, 1)} answers at risk of being bought again "
            f"({spend.answers} answers recorded, {read} rows read); kept as {aside}"
        )
    if not waiting:
        (folder / name).unlink(missing_ok=True)
    return replayed, None


# What identifies a row of each table: an id is in results/ at most once; the error log may
# hold an id many times, each at its own time.
_KEY_COLUMNS = {RESULTS: ["id"], ERRORS: ["id", "failed_at"]}


def _not_seen(
    table: pa.Table, columns: list[str], seen: set[Any], owns: Callable[[Any], bool]
) -> tuple[pa.Table | None, int]:
    """The rows whose key is not in ``seen`` and whose id this run owns (``seen`` then holds
    them too; None if none), and how many rows not in ``seen`` wait for another owner."""
    keep = []
    waiting = 0
    for index, key in enumerate(zip(*(table.column(c).to_pylist() for c in columns), strict=True)):
        if key in seen:
            continue
        if not owns(key[0]):
            waiting += 1
            continue
        seen.add(key)
        keep.append(index)
    return (table.take(pa.array(keep, pa.int64())) if keep else None), waiting


class JournaledSink:
    """A part writer whose added rows also go to the journal (the pipeline's sink)."""

    def __init__(self, writer: PartWriter, journal: Journal, table: str) -> None:
        self._writer = writer
        self._journal = journal
        self._table = table

    def add(self, row: Row) -> None:
        self._writer.add(row)
        self._journal.record(self._table, row)
