"""OUTDIR/batches/: the durable record of every batch submission.

    batches/00001.ids    the row ids of submission 1, one JSON string a line, in line order
    batches/00001.json   its record: state, file and batch ids, the provider's status

A submission moves through these states, each written before the next step starts:

    written   its file is on local disk and may be uploading (found again by its upload name)
    uploaded  the provider holds the file (``file_id``); no batch was asked for yet
    creating  ``POST /batches`` may have been sent, with a client ``token`` in its metadata:
              a batch may exist, found by the token or the file id, never created on a guess
    created   the batch exists (``batch_id``); its rows are the provider's until collected
    collected its answers are committed to results/ and errors/
    abandoned never submitted (the run stopped first): its rows are pending again

So after a kill -9 at any moment the next run knows, for every row it ever packed, whether
it may be at the provider, and re-attaches instead of submitting it again. Records go through
the output directory's storage (``read_bytes`` / ``write_bytes`` / ``create`` / ``list``), so
the ledger lives wherever OUTDIR does, local disk or object storage.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from ..idset import IdSet
from .files import BatchFile

FOLDER = "batches"
WRITTEN, UPLOADED, CREATING, CREATED, COLLECTED, ABANDONED = (
    "written",
    "uploaded",
    "creating",
    "created",
    "collected",
    "abandoned",
)
OPEN_STATES = frozenset({WRITTEN, UPLOADED, CREATING, CREATED})
# The provider's final statuses: nothing more will be answered.
FINAL_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})


class LedgerStorage(Protocol):
    """The part of zbatch's Storage the ledger uses."""

    def read_bytes(self, name: str) -> bytes | None: ...

    def write_bytes(self, name: str, data: bytes) -> None: ...

    def create(self, name: str, write: Callable[[BinaryIO], None]) -> None: ...

    def list(self, folder: str) -> list[str]: ...


@dataclass(slots=True)
class Submission:
    """One batch file's way through the provider."""

    seq: int
    model: str
    rows: int
    bytes: int
    sha256: str
    upload_name: str
    fingerprint: str  # the request settings its lines were made with (Job.fingerprint)
    state: str = WRITTEN
    file_id: str | None = None
    token: str | None = None  # the client token in the batch's metadata (state creating)
    batch_id: str | None = None
    status: str | None = None  # the provider's, e.g. in_progress
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    provider_errors: str | None = None
    created_at: float | None = None  # when the batch was created (Unix seconds)
    updated_at: float | None = None
    unanswered: int | None = None  # rows it left pending (expired / cancelled / failed)
    worst_usd: float = 0.0  # its rows' worst case, reserved against max_cost while it is open

    @property
    def name(self) -> str:
        return f"{FOLDER}/{self.seq:05d}.json"

    @property
    def ids_name(self) -> str:
        return f"{FOLDER}/{self.seq:05d}.ids"

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Ledger:
    """Reads and writes the submissions of one output directory."""

    def __init__(self, storage: LedgerStorage) -> None:
        self._storage = storage

    def submissions(self) -> list[Submission]:
        """Every submission ever recorded, oldest first."""
        found = []
        for name in self._storage.list(FOLDER):
            if not name.endswith(".json"):
                continue
            data = self._storage.read_bytes(f"{FOLDER}/{name}")
            if data is not None:
                found.append(Submission(**json.loads(data)))
        return sorted(found, key=lambda s: s.seq)

    def add(self, file: BatchFile, fingerprint: str, *, worst_usd: float = 0.0) -> Submission:
        """Record a written file, ids first, before it is uploaded; ``worst_usd`` is its rows'
        worst case, held against the budget while it is open."""
        # The numbers taken, from one listing: the ids file is the first a number gets.
        names = self._storage.list(FOLDER)
        taken = (int(name[:-4]) for name in names if name.endswith(".ids") and name[:-4].isdigit())
        seq = max(taken, default=0) + 1
        while True:
            submission = Submission(
                seq=seq,
                model=file.model,
                rows=file.rows,
                bytes=file.bytes,
                sha256=file.sha256,
                # Unique to this submission and its content: found again after a crash.
                upload_name=f"zbatch-{seq:05d}-{file.sha256[:16]}.jsonl",
                fingerprint=fingerprint,
                worst_usd=worst_usd,
            )
            try:
                self._storage.create(submission.ids_name, _ids_writer(file.ids))
            except FileExistsError:  # another shard took this number meanwhile
                seq += 1
                continue
            self.save(submission)
            return submission

    def save(self, submission: Submission) -> None:
        """Make ``submission``'s current state durable."""
        submission.updated_at = time.time()
        data = json.dumps(submission.to_json(), indent=1).encode()
        self._storage.write_bytes(submission.name, data)

    def ids(self, submission: Submission) -> list[str]:
        """The row ids of a submission, in line order."""
        data = self._storage.read_bytes(submission.ids_name)
        if data is None:
            raise FileNotFoundError(f"{submission.ids_name} is missing")
        return [json.loads(line) for line in data.splitlines()]

    def open_ids(self, fingerprint: str) -> IdSet:
        """Ids that open submissions of this request hold: not to be packed again."""
        held = IdSet()
        for submission in self.submissions():
            if submission.open and submission.fingerprint == fingerprint:
                for row_id in self.ids(submission):
                    held.add(row_id)
        return held


def _ids_writer(ids: list[str]) -> Callable[[BinaryIO], None]:
    def write(handle: BinaryIO) -> None:
        for chunk in _chunks(ids, 10_000):
            handle.write(
                b"".join(json.dumps(i, ensure_ascii=False).encode() + b"\n" for i in chunk)
            )

    return write


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reserved_usd(storage: LedgerStorage) -> float:
    """The worst cases of an OUTDIR's open batches: spend the budget must keep room for."""
    return sum(s.worst_usd for s in Ledger(storage).submissions() if s.open)


def open_batches(storage: LedgerStorage) -> list[Submission]:
    """Every submission of an OUTDIR, oldest first (for ``status`` and ``cancel``)."""
    return Ledger(storage).submissions()


def describe(submission: Submission, now: float | None = None) -> dict[str, Any]:
    """One batch as ``status`` lists it: id, state, counts, created, age."""
    now = time.time() if now is None else now
    created = submission.created_at
    stamp = None if created is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
    return {
        "file": f"{submission.seq:05d}",
        "batch_id": submission.batch_id,
        "state": submission.status or submission.state,
        "collected": submission.state == COLLECTED,
        "rows": submission.rows,
        "completed": submission.completed,
        "failed": submission.failed,
        "unanswered": submission.unanswered,
        "created": stamp,
        "age_seconds": None if created is None else round(now - created),
    }
