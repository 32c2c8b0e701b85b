"""What every reader shares: a row as read, ids of rows done before, the files it reads."""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from .. import urls

# Tunables read at call time (tests turn them down): the longest line a text reader takes,
# and how many rows the resume fast path reads as one block.
BLOCK_ROWS = 4096
MAX_LINE_BYTES = 16 * 1024 * 1024


# What reading a damaged file raises: a truncated or corrupt gzip, a bad Parquet page, EIO.
READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file in object storage, with the few things the readers use of a :class:`Path`."""

    url: str
    fs: Any

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def open(self, mode: str = "rb") -> IO[bytes]:
        handle = self.fs.open(urls.bucket_path(self.url), mode)
        return io.BufferedReader(handle)  # for readline(limit), which fsspec's file lacks


@dataclass(frozen=True, slots=True)
class StdinFile:
    """JSONL read from stdin, spooled to a temp file so that it can be read more than once."""

    spool: Any  # the open temp file: it lives (and is deleted) with this object

    name = "stdin"

    def __str__(self) -> str:
        return "stdin"

    def open(self, mode: str = "rb") -> IO[bytes]:
        return open(self.spool.name, mode)


InputPath = Path | RemoteFile | StdinFile


@dataclass(frozen=True, slots=True)
class RawRow:
    """One input row, or the reason it could not be read."""

    where: str  # "reviews.jsonl line 17" / "news.parquet row 4"
    data: dict[str, Any] | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class DoneRows:
    """Consecutive rows whose ids were all done before: only their ids were read."""

    file: str
    unit: str  # "row" (Parquet) or "line" (JSONL, CSV)
    first: int  # the row or line number of ids[0]
    ids: list[str]

    def where(self, offset: int) -> str:
        return f"{self.file} {self.unit} {self.first + offset}"


@contextlib.contextmanager
def open_text(path: InputPath) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def is_utf8(text: str | bytes) -> bool:
    """Whether ``text`` is valid UTF-8 as read: bytes that decode, or a str decoded with
    ``errors="surrogateescape"`` that holds no escaped byte."""
    try:
        if isinstance(text, bytes):
            text.decode("utf-8")
        else:
            text.encode("utf-8")
    except UnicodeError:
        return False
    return True
