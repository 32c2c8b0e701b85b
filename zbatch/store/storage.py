"""Where an output directory lives: the few operations OutputDir needs, here on a local disk.

Names are '/'-separated paths relative to the OUTDIR root ("job.json", "results/part-….parquet").
A second backend (object storage) implements the same :class:`Storage` protocol; everything
above it (the layout, the commit order, resume) is written once, in :mod:`zbatch.store.outdir`.

On a local disk a new file appears under its final name only when it is complete and synced:
it is written to a hidden temp name, fsynced, hard-linked to its name (which fails if the name
is taken, so a commit never overwrites), and the directory is fsynced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..errors import LockedError, StoreError

if TYPE_CHECKING:
    import pyarrow.fs


class Storage(Protocol):
    """The operations an output directory needs from where it is kept."""

    location: str  # for messages; never holds credentials

    def read_bytes(self, name: str) -> bytes | None:
        """The whole file, or None when it does not exist."""

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write (or replace) a whole file; readers see the old or the new one, never a mix."""

    def write_file(
        self, name: str, write: Callable[[BinaryIO], object], *, outdir: bool = True
    ) -> None:
        """Write (or replace) a whole file by ``write(handle)``, streamed; readers see the old
        or the new one (``outdir=False``: a file outside any OUTDIR, such as an export)."""

    def create(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """Create a file by ``write(handle)``: create-only (FileExistsError when the name is
        taken) and never visible half-written."""

    def move(self, src: str, dst: str) -> None:
        """Give a file a new name, which must not exist yet."""

    def list(self, folder: str) -> list[str]:
        """The names of the files directly in ``folder``, sorted; [] when there is none."""

    def make_folder(self, folder: str) -> None:
        """Make ``folder`` exist, so readers find it before it holds a file (object
        storage has no folders: nothing to do there)."""

    def delete(self, name: str) -> None:
        """Remove a file; one that does not exist is fine."""

    def lock(self, name: str) -> AbstractContextManager[None]:
        """Hold an exclusive lock while the context lasts; LockedError naming the holder."""

    def holder(self, name: str) -> str | None:
        """Who holds the lock ``name`` now (as :meth:`lock` names them), or None."""

    def log_handler(self, name: str) -> logging.Handler:
        """A logging handler that appends lines to the file ``name``."""

    def arrow(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem and the root path in it, for datasets and Parquet readers."""

    def free_bytes(self) -> int | None:
        """Free space where new files go, or None when it is unknown."""


# The least free room a run starts or goes on with: job.json, summary.json, run.log and a
# small part fit in it; below it the first commit would fail after answers were bought.
MIN_ROOM = 1 << 20


def room_error(storage: Storage, needed: int = 0) -> StoreError | None:
    """A StoreError when ``storage`` clearly cannot hold the next part (about ``needed``
    bytes, at least MIN_ROOM); None when it can or its free space is unknown."""
    free = storage.free_bytes()
    needed = max(needed, MIN_ROOM)
    if free is None or free >= needed:
        return None
    return StoreError(
        f"{storage.location} has {free / 1e6:.1f} MB free, less than the next part needs "
        f"(about {needed / 1e6:.1f} MB), so no new request is sent: free space or use another "
        "OUTDIR, then run the same command to resume"
    )


def store_error(what: str, exc: OSError, *, outdir: bool = True) -> StoreError:
    """The one message for a failed write: what, why, what to do, and (in an OUTDIR) that
    nothing committed is lost."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        advice = "free space"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make it writable or choose another location"
    elif isinstance(exc, FileExistsError | NotADirectoryError):
        advice = "a file stands where a folder must be: move it or choose another location"
    else:
        advice = "fix the disk"
    if not outdir:
        return StoreError(f"could not write {what}: {exc.strerror or exc}; {advice}")
    return StoreError(
        f"could not write {what}: {exc.strerror or exc}. Parts committed earlier are intact; "
        f"{advice}, then run the same command to resume"
    )


class LocalStorage:
    """An output directory on a local (or network) disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write_file(name, lambda handle: handle.write(data))

    def write_file(
        self, name: str, write: Callable[[BinaryIO], object], *, outdir: bool = True
    ) -> None:
        """Write (or replace) a whole file by ``write(handle)``, streamed, atomically
        (``outdir=False``: a file outside any OUTDIR, such as an export)."""
        self._publish(name, write, create_only=False, outdir=outdir)

    def create(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        self._publish(name, write, create_only=True)

    def _publish(
        self,
        name: str,
        write: Callable[[BinaryIO], object],
        *,
        create_only: bool,
        outdir: bool = True,
    ) -> None:
        """A synced temp file by ``write``, then its name (replacing the file there, or
        ``create_only``: FileExistsError when the name is taken), then the folder synced. The
        temp file goes however it ends; any other OSError is a StoreError."""
        path = self._path(name)
        tmp: Path | None = None  # _write_temp removes its file itself if it fails
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(path, write)
            if create_only:
                _link(tmp, path)
                tmp.unlink(missing_ok=True)  # gone already if _link had to rename it
            else:
                os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if not isinstance(exc, OSError) or (create_only and isinstance(exc, FileExistsError)):
                raise
            raise store_error(str(path), exc, outdir=outdir) from exc

    def _write_temp(self, path: Path, write: Callable[[BinaryIO], object]) -> Path:
        """Write and sync a hidden temp file beside ``path``; its path. It is ``.NAME.tmp``
        unless another writer has that one (shards of a job in other processes write
        job.json and summary.json at the same moment): then a name of its own."""
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            handle = open(tmp, "xb")  # noqa: SIM115 - closed by the with-block below
        except FileExistsError:
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            handle = open(tmp, "xb")  # noqa: SIM115
        try:
            with handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(source, target)
            source.unlink(missing_ok=True)
            fsync_dir(target.parent)
            if source.parent != target.parent:
                fsync_dir(source.parent)
        except OSError as exc:
            if isinstance(exc, FileExistsError):
                raise
            raise store_error(str(target), exc) from exc

    def list(self, folder: str) -> list[str]:
        try:
            return sorted(entry.name for entry in os.scandir(self._path(folder)) if entry.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def make_folder(self, folder: str) -> None:
        try:
            self._path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(str(self._path(folder)), exc) from exc

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A kernel lock (flock): a crashed holder's lock goes with its process.

        The lock file is opened without following a symlink, so a link planted at its name
        cannot make zbatch write elsewhere."""
        path = self._path(name)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"the output directory {self.root} is a file: choose another output directory"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symbolic link; remove it, then run again") from None
            raise store_error(str(path), exc) from exc
        with os.fdopen(fd, "r+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = handle.read().strip() or "unknown"
                raise LockedError(
                    f"another zbatch run holds {path} ({holder}); wait for it to finish"
                ) from None
            try:  # unbuffered: a failed write leaves nothing for the close to flush again
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{holder_text()}\n".encode(), 0)
            except OSError as exc:  # a full disk
                raise store_error(str(path), exc) from exc
            yield

    def holder(self, name: str) -> str | None:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "unknown"
            return None  # closing the handle lets the probe's own lock go

    def log_handler(self, name: str) -> logging.Handler:
        try:
            return logging.FileHandler(self._path(name), encoding="utf-8")
        except OSError as exc:
            raise store_error(str(self._path(name)), exc) from exc

    def arrow(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None


def holder_text() -> str:
    """Who holds a lock: written into it, and quoted to the run that finds it taken."""
    since = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


def _link(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` too, failing if ``dst`` exists (a create-only rename).

    A filesystem without hard links gets a checked rename instead."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(dst)) from None
        os.rename(src, dst)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
