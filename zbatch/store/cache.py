"""The response cache: a request asked before, by any run into any OUTDIR, is answered
without being bought again.

    cache = ResponseCache.open(default_path())
    key = request_key(body, endpoint="https://api.z.ai/api/paas/v4", samples=1)
    cache.get(key)            # the answers committed for it, or None
    cache.put_many([(key, answers, model)])   # once the result part holding them is durable

Content-addressed: the key is a SHA-256 of the request body in canonical form (sorted keys),
the endpoint and the number of samples; the body names the model. What is stored is the
row's final committed answer (after any repair), never a prompt and never a key. One SQLite
database in WAL mode (readers never wait for the writer; writers queue on busy_timeout), so
shards and cluster workers on one machine share it. Only deterministic requests are cached
by default (temperature 0, a seed, or do_sample false): another answer to a sampling request
is what its user pays for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JobError

FILE_NAME = "responses.sqlite"
BUSY_MS = 30_000  # how long a writer waits for another process's write to end

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key BLOB PRIMARY KEY,
    answers TEXT NOT NULL,
    model TEXT,
    created REAL NOT NULL,
    used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""


def open_cache(
    mode: str, path: str | None, *, simulated: bool
) -> tuple[ResponseCache | None, str | None]:
    """The cache a run uses (None: off, or a simulated run, which never reads nor fills
    it), and a warning when it cannot be opened: the run then goes on without it."""
    if simulated or mode == "off":
        return None, None
    where = Path(path) if path else default_path()
    try:
        return ResponseCache(where), None
    except (sqlite3.Error, OSError) as exc:
        return None, f"the response cache {where} cannot be opened ({exc}): running without it"


def default_path() -> Path:
    """$XDG_CACHE_HOME/zbatch/responses.sqlite (~/.cache when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zbatch" / FILE_NAME


def deterministic(body: Mapping[str, Any]) -> bool:
    """Whether a request asks for the same answer every time it is sent."""
    return (
        body.get("temperature") == 0
        or body.get("seed") is not None
        or body.get("do_sample") is False
    )


def request_key(body: Mapping[str, Any], *, endpoint: str, samples: int) -> bytes:
    """The cache key of a request: its canonical body (with the model), endpoint, samples."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    head = f"{endpoint}\n{samples}\n".encode()
    return hashlib.sha256(head + canonical.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class CacheStats:
    path: str
    entries: int
    hits: int
    bytes: int
    oldest: float | None
    newest: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "entries": self.entries,
            "hits": self.hits,
            "bytes": self.bytes,
            "oldest_used": self.oldest,
            "newest_used": self.newest,
        }


class ResponseCache:
    """One process's handle on the cache file: a reading connection for lookups (the event
    loop's thread) and a writing one for commits (a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._writer = _connect(path)
        with self._writer:
            self._writer.execute(_SCHEMA)
        self._reader = _connect(path)
        self._lock = threading.Lock()  # the writer: commits of one run never overlap anyway
        self.used: list[bytes] = []  # keys that answered rows, recorded at the next put

    def key_for(
        self, body: Mapping[str, Any], *, endpoint: str, samples: int, every: bool
    ) -> bytes | None:
        """The key of a request the cache may answer: deterministic ones, or ``every`` one
        (cache = "all"); None for the others."""
        if not (every or deterministic(body)):
            return None
        return request_key(body, endpoint=endpoint, samples=samples)

    def store(self, entries: list[tuple[bytes, list[dict[str, Any]], str]]) -> str | None:
        """:meth:`put_many`, saying what went wrong instead of raising: the cache only saves
        money, and a run goes on without it."""
        try:
            self.put_many(entries)
        except sqlite3.Error as exc:
            return f"response cache {self.path}: answers not stored ({exc})"
        return None

    def get(self, key: bytes) -> list[dict[str, Any]] | None:
        row = self._reader.execute("SELECT answers FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            answers = json.loads(row[0])
        except ValueError:
            return None  # damaged: asked again, and replaced when that answer is committed
        if not isinstance(answers, list) or not answers:
            return None
        self.used.append(key)
        return answers

    def put_many(self, entries: Iterable[tuple[bytes, list[dict[str, Any]], str]]) -> int:
        """Store committed answers, and mark the keys answered from the cache as used."""
        now = time.time()
        rows = [
            (key, json.dumps(answers, ensure_ascii=False), model, now, now)
            for key, answers, model in entries
        ]
        with self._lock:
            used, self.used = self.used, []
            with self._writer:  # one transaction
                self._writer.executemany(
                    "INSERT INTO answers (key, answers, model, created, used) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "answers = excluded.answers, used = excluded.used",
                    rows,
                )
                self._writer.executemany(
                    "UPDATE answers SET used = ?, hits = hits + 1 WHERE key = ?",
                    [(now, key) for key in used],
                )
        return len(rows)

    def stats(self) -> CacheStats:
        entries, hits, oldest, newest = self._reader.execute(
            "SELECT count(*), coalesce(sum(hits), 0), min(used), max(used) FROM answers"
        ).fetchone()
        size = sum(
            p.stat().st_size
            for p in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal",)))
            if p.exists()
        )
        return CacheStats(str(self.path), entries, hits, size, oldest, newest)

    def prune(self, older_than: float) -> int:
        """Forget answers not used for ``older_than`` seconds; the file shrinks."""
        with self._lock:
            with self._writer:
                removed = self._writer.execute(
                    "DELETE FROM answers WHERE used < ?", (time.time() - older_than,)
                ).rowcount
            self._writer.execute("VACUUM")
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    def close(self) -> None:
        for connection in (self._reader, self._writer):
            with contextlib.suppress(sqlite3.Error):
                connection.close()


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.isolation_level = "IMMEDIATE"  # `with connection:` is one write transaction
    return connection


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """Seconds in "30d", "12h", "90m", "45s", "2w"; JobError naming the flag otherwise."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not 0 <= value < 1e9:
        raise JobError(f"--older-than {text!r}: write a duration like 30d, 12h, 90m or 2w")
    return value * _UNITS[unit]


def format_stats(stats: CacheStats) -> str:
    """`zbatch cache stats` as lines a person reads."""

    def when(stamp: float | None) -> str:
        if stamp is None:
            return "-"
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))

    return "\n".join(
        [
            f"cache      {stats.path}",
            f"answers    {stats.entries}",
            f"hits       {stats.hits} (rows answered from it since stored)",
            f"size       {stats.bytes / 1e6:.1f} MB",
            f"used       {when(stats.oldest)} .. {when(stats.newest)}",
        ]
    )
