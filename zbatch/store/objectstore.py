"""An output directory in object storage (s3://, gs://): the :class:`Storage` protocol there.

Object storage has no rename and no kernel lock, so this backend keeps the same promises by
other means:

- A new object (a part) is written straight to its final name, create-only: S3
  ``If-None-Match: *``, GCS ``ifGenerationMatch=0`` (fsspec's ``"xb"`` mode). A single PUT or
  a completed multipart upload appears whole; an upload cut off (``kill -9``) never appears;
  a name that exists is never overwritten (412 → FileExistsError).
- ``move`` is a create-only copy, then a delete of the source.
- The lock is a lease object: create-only, naming its holder (pid, host, start) and an
  expiry that a background thread renews while it is held. Another run is refused (exit 75)
  while the lease is live; once it has expired (or its holder's pid is gone on this host) it
  is taken over. Two runs taking over the same expired lease race for one create-only
  marker under ``.leases/``, so only one of them wins.
- run.log is written as whole objects: lines are buffered and appended to the object at
  most every ``LOG_FLUSH_SECONDS`` and when the run ends.

Credentials and the endpoint come only from each library's usual environment and config
(:mod:`zbatch.urls`); a message quoting a backend error goes through :func:`urls.safe`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import urls
from ..errors import JobError, LockedError, StoreError, ZbatchError
from .storage import holder_text

if TYPE_CHECKING:
    import pyarrow.fs

LEASE_SECONDS = 60.0  # a lease not renewed for this long is taken over
LOG_FLUSH_SECONDS = 5.0
LEASES = ".leases"  # the take-over markers
log = logging.getLogger(__name__)


class ObjectStorage:
    """An output directory under an s3:// or gs:// URL."""

    def __init__(self, url: str, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.location = urls.safe(url.rstrip("/"))
        self.lease_seconds = lease_seconds
        self._fs = urls.filesystem(url)
        self._failures = urls.backend_errors(self._fs)
        self._root = urls.bucket_path(url)
        bucket = self._root.partition("/")[0]
        try:  # a missing bucket or no permission is a job error, before anything is sent
            self._fs.info(bucket)
        except FileNotFoundError:
            raise JobError(
                f"output directory {self.location}: the bucket {bucket} does not exist; "
                "create it first (zbatch does not create buckets)"
            ) from None
        except self._failures as exc:
            raise urls.access_error(url, "output directory", exc) from None

    def _key(self, name: str) -> str:
        return f"{self._root}/{name}" if name else self._root

    @contextlib.contextmanager
    def _errors(self, name: str, *, outdir: bool = True) -> Iterator[None]:
        """A backend's error as a StoreError (exit 74) naming the object; FileExistsError and
        everything else pass. ``outdir=False``: an object outside any OUTDIR (an export)."""
        try:
            yield
        except FileExistsError:
            raise
        except self._failures as exc:
            why = urls.safe(str(exc) or type(exc).__name__)
            advice = "check the bucket, the credentials and the network"
            if not outdir:
                raise StoreError(
                    f"could not write {self.location}/{name}: {why}; {advice}"
                ) from None
            raise StoreError(
                f"could not use {self.location}/{name}: {why}. Parts committed earlier are "
                f"intact; {advice}, then run the same command to resume"
            ) from None

    def read_bytes(self, name: str) -> bytes | None:
        with self._errors(name):
            try:
                data: bytes = self._fs.cat_file(self._key(name))
            except FileNotFoundError:
                return None
            return data

    def write_bytes(self, name: str, data: bytes) -> None:
        with self._errors(name):
            self._fs.pipe_file(self._key(name), data)  # one PUT: readers see old or new

    def create(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        with self._errors(name):
            self._write(name, "xb", write)

    def write_file(
        self, name: str, write: Callable[[BinaryIO], object], *, outdir: bool = True
    ) -> None:
        with self._errors(name, outdir=outdir):
            self._write(name, "wb", write)

    def _write(self, name: str, mode: str, write: Callable[[BinaryIO], object]) -> None:
        """Upload by ``write(handle)``: one PUT, or a multipart upload completed at the end."""
        handle = self._fs.open(self._key(name), mode)
        try:
            write(handle)
            if mode == "xb" and not handle.tell():
                # fsspec commits an empty file by a plain "touch", which would overwrite
                raise ValueError(f"{name}: a create-only object must not be empty")
        except BaseException:
            handle.discard()  # aborts a multipart upload: nothing appears
            handle.closed = True  # or closing it (even by the GC) would commit the half
            raise
        handle.close()  # the PUT (create-only with "xb") or the multipart completion

    def move(self, src: str, dst: str) -> None:
        with self._errors(src):
            with self._fs.open(self._key(src), "rb") as source:
                self.create(dst, lambda handle: shutil.copyfileobj(source, handle))
            self._fs.rm_file(self._key(src))

    def list(self, folder: str) -> list[str]:
        with self._errors(folder or "."):
            try:
                entries = self._fs.ls(self._key(folder), detail=True)
            except FileNotFoundError:
                return []
            return sorted(
                entry["name"].rsplit("/", 1)[-1] for entry in entries if entry["type"] == "file"
            )

    def make_folder(self, folder: str) -> None:
        """Object storage has no folders: a prefix exists once an object is under it."""

    def delete(self, name: str) -> None:
        with self._errors(name), contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._key(name))

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return Lease(self, name)

    def holder(self, name: str) -> str | None:
        lease = read_lease(self, name)
        return str(lease.get("holder", "unknown")) if lease is not None and _alive(lease) else None

    def log_handler(self, name: str) -> logging.Handler:
        return ObjectLogHandler(self, name)

    def arrow(self) -> tuple[pyarrow.fs.FileSystem, str]:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self._fs)), self._root

    def free_bytes(self) -> int | None:
        return None


class Lease(contextlib.AbstractContextManager[None]):
    """A lock in object storage: the object ``name`` names its holder and an expiry."""

    def __init__(self, storage: ObjectStorage, name: str) -> None:
        self._storage = storage
        self._name = name
        self._token = secrets.token_hex(8)
        self._holder = holder_text()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        record = {
            "holder": self._holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self._token,
            "expires": time.time() + self._storage.lease_seconds,
        }
        return json.dumps(record).encode()

    def __enter__(self) -> None:
        name, record = self._name, self._record()
        for _ in range(3):  # the lease may be released between our create and our read
            try:
                self._storage.create(name, lambda handle: handle.write(record))
                break
            except FileExistsError:
                current = self._read()
            if current is not None:
                self._take_over(current)
                break
        else:
            raise self._locked(None)
        self._renewer = threading.Thread(target=self._renew, name=f"lease {name}", daemon=True)
        self._renewer.start()

    def _read(self) -> dict[str, Any] | None:
        return read_lease(self._storage, self._name)

    def _take_over(self, current: dict[str, Any]) -> None:
        """Take an expired lease, or raise LockedError naming its live holder."""
        storage, name = self._storage, self._name
        if _alive(current):
            raise self._locked(current)
        previous = str(current.get("token", "unreadable"))
        try:  # one create-only marker per expired lease: only one run takes it over
            marker = self._token.encode()
            storage.create(f"{LEASES}/{name}.{previous}", lambda handle: handle.write(marker))
        except FileExistsError:
            raise self._locked(self._read()) from None
        storage.write_bytes(name, self._record())
        holder = current.get("holder", "unreadable")
        log.info("took over the expired lock %s/%s of %s", storage.location, name, holder)

    def _locked(self, current: dict[str, Any] | None) -> LockedError:
        holder = (current or {}).get("holder", "another run taking it over")
        until = time.strftime(
            "%H:%M:%S UTC", time.gmtime(float((current or {}).get("expires", time.time())))
        )
        return LockedError(
            f"another zbatch run holds {self._storage.location}/{self._name} ({holder}; its "
            f"lease runs until {until}); wait for it to finish. A run that died elsewhere "
            f"holds it until it expires ({self._storage.lease_seconds:g} s after its last renewal)"
        )

    def _renew(self) -> None:
        """Renew the lease every third of its life until released; warn if it was lost."""
        while not self._stop.wait(self._storage.lease_seconds / 3):
            try:
                current = self._read()
                if current is None or current.get("token") != self._token:
                    log.error(
                        "lost the lock %s/%s to %s: another run may write to this output",
                        self._storage.location,
                        self._name,
                        (current or {}).get("holder", "nobody"),
                    )
                    return
                self._storage.write_bytes(self._name, self._record())
            except ZbatchError as exc:  # a network blip: try again at the next renewal
                log.warning("could not renew the lock: %s", exc)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = self._read()
        if current is not None and current.get("token") == self._token:
            self._storage.delete(self._name)
        for marker in self._storage.list(LEASES):
            if marker.startswith(f"{self._name}."):
                self._storage.delete(f"{LEASES}/{marker}")


def read_lease(storage: ObjectStorage, name: str) -> dict[str, Any] | None:
    """A lease as stored, None when there is none; {} when unreadable (nobody can renew it:
    it counts as expired)."""
    blob = storage.read_bytes(name)
    if blob is None:
        return None
    try:
        lease = json.loads(blob)
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) else {}


def _alive(lease: dict[str, Any]) -> bool:
    """Whether a lease's holder may still be running: not expired, and not a dead pid here."""
    if float(lease.get("expires", 0)) < time.time():
        return False
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease.get("pid", 0)), 0)
        except ProcessLookupError:
            return False  # the holder died on this machine: no need to wait for the expiry
        except PermissionError:
            return True  # another user's live process
    return True


class ObjectLogHandler(logging.Handler):
    """Appends log lines to an object, rewriting it whole every few seconds and at close."""

    def __init__(self, storage: ObjectStorage, name: str) -> None:
        super().__init__()
        self._storage = storage
        self._name = name
        self._pending: list[str] = []
        self._written = time.monotonic()
        self.failure: StoreError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + "\n")
            if time.monotonic() - self._written >= LOG_FLUSH_SECONDS:
                self.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Append the pending lines: read the object, add them, write it back whole.

        Reading first keeps the lines other runs (shards) appended in between, bar a race of
        milliseconds. Lines that cannot be written stay pending for the next try."""
        with self.lock or contextlib.nullcontext():
            if not self._pending:
                return
            self._written = time.monotonic()
            try:
                before = self._storage.read_bytes(self._name) or b""
                self._storage.write_bytes(self._name, before + "".join(self._pending).encode())
            except StoreError as exc:
                self.failure = exc
                return
            self._pending.clear()
            self.failure = None

    def close(self) -> None:
        try:
            self.flush()
            if self._pending:
                print(f"zbatch: {self._name} not written: {self.failure}", file=sys.stderr)
        finally:
            super().close()
