"""Batch input files: pending requests written as Batch API lines, streamed to disk.

    writer = BatchFileWriter(folder, endpoint="/v4/chat/completions",
                             max_rows=50_000, max_bytes=100 * 2**20)
    for row_id, model, body in pending:
        full = writer.add(row_id, model, body)   # a file closed to make room, or None
        if full: submit(full)
    for full in writer.close(): submit(full)

A line is ``{"custom_id", "method": "POST", "url": endpoint, "body": {...}}``. A file holds
one model only and stays within both limits; only the ids of the open files are in memory.

The ``custom_id`` of a line is the row id when the provider accepts it as one (6 to 64 of
``A-Z a-z 0-9 _ - . : @``, Zhipu refuses shorter ones with 1214); any other id is sent as
``zbrow-<line number>``, which no accepted id can equal. The file's ids in line order (kept
in the ledger) turn a custom_id back into its row id: :func:`id_map`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAPPED_PREFIX = "zbrow-"
_ACCEPTED = re.compile(r"[A-Za-z0-9_\-.:@]{6,64}")


def custom_id(row_id: str, line: int) -> str:
    """The custom_id that line ``line`` (0-based) of a file sends for ``row_id``."""
    if _ACCEPTED.fullmatch(row_id) and not row_id.startswith(MAPPED_PREFIX):
        return row_id
    return f"{MAPPED_PREFIX}{line:06d}"


def id_map(ids: Iterable[str]) -> dict[str, str]:
    """custom_id -> row id for a file whose lines hold ``ids`` in order."""
    return {custom_id(row_id, line): row_id for line, row_id in enumerate(ids)}


class LineTooBig(ValueError):
    """One request is bigger than a whole batch file may be."""


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A finished batch input file on local disk."""

    path: Path
    model: str
    rows: int
    bytes: int
    sha256: str
    ids: list[str]  # row ids in line order


@dataclass(slots=True)
class _Open:
    path: Path
    handle: BinaryIO
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    bytes: int = 0
    ids: list[str] = field(default_factory=list)


def batch_line(row_id: str, line: int, url: str, body: bytes) -> bytes:
    """Line ``line`` (0-based) of a batch file: the request ``body`` (JSON) for ``row_id``."""
    name = json.dumps(custom_id(row_id, line), ensure_ascii=False)
    return b'{"custom_id":%s,"method":"POST","url":%s,"body":%s}\n' % (
        name.encode(),
        json.dumps(url).encode(),
        body,
    )


class FilePacker:
    """Where lines go: one open file per model, each within ``max_rows`` and ``max_bytes``.

    A line's size does not depend on its place in a file (a mapped custom_id has a fixed
    width), so the dry run counts files with this alone."""

    def __init__(self, *, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.files = 0  # files started
        self._open: dict[str, tuple[int, int]] = {}  # model -> (rows, bytes)

    def place(self, model: str, size: int) -> bool:
        """Count a line of ``size`` bytes; True when it starts a new file for ``model``."""
        if size > self.max_bytes:
            raise LineTooBig(
                f"the request is {size} bytes, more than a batch file may hold "
                f"({self.max_bytes} bytes)"
            )
        rows, used = self._open.get(model, (0, 0))
        new = rows == 0 or rows >= self.max_rows or used + size > self.max_bytes
        if new:
            self.files += 1
            rows = used = 0
        self._open[model] = (rows + 1, used + size)
        return new


class BatchFileWriter:
    """Writes lines into one open file per model; a full file is closed and handed back."""

    def __init__(self, folder: Path, *, endpoint: str, max_rows: int, max_bytes: int) -> None:
        self._folder = folder
        self._url = endpoint
        self._packer = FilePacker(max_rows=max_rows, max_bytes=max_bytes)
        self._open: dict[str, _Open] = {}

    def add(self, row_id: str, model: str, body: bytes) -> BatchFile | None:
        """Append one request (``body`` is its JSON); returns a file this closed, if any."""
        current = self._open.get(model)
        line = batch_line(row_id, len(current.ids) if current else 0, self._url, body)
        closed = None
        if self._packer.place(model, len(line)):
            if current is not None:
                closed = self._close(model)
            current = self._start(model)
            line = batch_line(row_id, 0, self._url, body)
        assert current is not None
        current.handle.write(line)
        current.hasher.update(line)
        current.bytes += len(line)
        current.ids.append(row_id)
        return closed

    def close(self) -> list[BatchFile]:
        """Close every open file; returns them."""
        return [self._close(model) for model in list(self._open)]

    def discard(self) -> None:
        """Close and delete the open files (the run stopped before they were full)."""
        for model in list(self._open):
            self._close(model).path.unlink(missing_ok=True)

    def _start(self, model: str) -> _Open:
        path = self._folder / f"batch-{self._packer.files:05d}.jsonl"
        opened = _Open(path, path.open("wb"))
        self._open[model] = opened
        return opened

    def _close(self, model: str) -> BatchFile:
        opened = self._open.pop(model)
        opened.handle.close()
        return BatchFile(
            path=opened.path,
            model=model,
            rows=len(opened.ids),
            bytes=opened.bytes,
            sha256=opened.hasher.hexdigest(),
            ids=opened.ids,
        )
