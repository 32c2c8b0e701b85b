"""zbatch's CLI with one fault injected: how the crash tests stop it at an exact point.

    ZB_FAULT='{"crash": "after_link", "nth": 3}' python tests/faults.py run -i in.jsonl -o out

$ZB_FAULT is a JSON object naming one fault. ``file`` is a glob on the base name of the file
the fault concerns (default: a part's temp file, ``.part-*.parquet.tmp``); ``nth`` says at
which matching occurrence it strikes (default 1). A crash is ``os._exit(9)``: no cleanup
runs, as after kill -9 or a power cut.

  {"crash": "write"}           part-way through writing the nth matching file
  {"crash": "before_fsync"}    before that file's data is fsynced
  {"crash": "before_link"}     around os.link(file, final name), the create-only rename
  {"crash": "after_link"}        (also the link of a staged compaction part to its name)
  {"crash": "before_dirsync"}  around the fsync of the folder the file was linked into
  {"crash": "after_dirsync"}
  {"crash": "before:OP"}       around a Storage operation (OP: write_bytes, create, move,
  {"crash": "after:OP"}          delete) whose name argument matches ``file``
  {"errno": "ENOSPC"}          writes of the nth and later matching files fail with that errno
  {"fsize": BYTES}             RLIMIT_FSIZE with SIGXFSZ ignored: a real EFBIG from the kernel
  {"free": BYTES}              LocalStorage.free_bytes() reports BYTES from its nth call on
  {"kill": "saved:STATE"}      batch mode: kill -9 right after the ledger records a submission's
                               state or provider status STATE (written, uploaded, in_progress…)
  {"kill": "after:commit"}     batch mode: after collected answers are committed as parts,
                               before the ledger hears of it
  {"kill": "after:CALL"}       batch mode: right after a Batch API call succeeded (upload,
                               create, download, delete_file): the provider did it, the ledger
                               has not heard

``name`` instead of ``file`` is a glob on the whole name a Storage operation gets
(``"errors/part-*"``), for a fault that must tell the tables apart.

Write faults come in through a module global ``open`` in zbatch.store.storage, which shadows
the builtin there only; the rename points through os.link, which LocalStorage commits with.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import resource
import signal
import stat
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zbatch.batch import mode
from zbatch.batch.api import BatchApi
from zbatch.batch.ledger import Ledger, Submission
from zbatch.cli import main
from zbatch.store import storage

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike, StrOrBytesPath

CRASHED = 9  # the exit status of a crash, told apart from zbatch's own codes
PART_TMP = ".part-*.parquet.tmp"
STORAGE_OPS = ("write_bytes", "create", "move", "delete")
CRASH_POINTS = {
    "write",
    *(f"{when}_{what}" for when in ("before", "after") for what in ("link", "dirsync")),
    "before_fsync",
    *(f"{when}:{op}" for when in ("before", "after") for op in STORAGE_OPS),
}


class Fault:
    """One fault: where it strikes, and at which matching occurrence."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.point: str | None = spec.get("crash")
        self.whole_name = "name" in spec
        self.pattern: str = spec.get("name") or spec.get("file", PART_TMP)
        self.nth: int = spec.get("nth", 1)
        self.errno: int | None = getattr(errno, spec["errno"]) if "errno" in spec else None
        self.fsize: int | None = spec.get("fsize")
        self.free: int | None = spec.get("free")
        self.kill: str | None = spec.get("kill")
        self._seen: Counter[str] = Counter()
        if self.point is not None and self.point not in CRASH_POINTS:
            raise SystemExit(f"faults.py: unknown crash point {self.point!r}")

    def matches(self, path: StrOrBytesPath) -> bool:
        name = os.fsdecode(path)
        return fnmatch.fnmatchcase(
            name if self.whole_name else os.path.basename(name), self.pattern
        )

    def count(self, event: str, path: StrOrBytesPath) -> int:
        """Count an occurrence of ``event`` on a matching file; 0 for any other file."""
        if not self.matches(path):
            return 0
        self._seen[event] += 1
        return self._seen[event]

    def crash_at(self, point: str, path: StrOrBytesPath) -> None:
        if point == self.point and self.count(point, path) == self.nth:
            os._exit(CRASHED)


class Torn:
    """A file that takes ``room`` more bytes, then dies (``crash``) or fails with ``err``:
    a crash or a full disk part-way through a write."""

    def __init__(self, handle: Any, *, room: int, err: int | None, crash: bool = False) -> None:
        assert crash or err is not None, "a torn file either crashes or fails"
        self.handle = handle
        self.room = room
        self.err = err
        self.crash = crash

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.handle.write(bytes(data)[: self.room])
            self.room = 0
            if self.crash:
                self.handle.flush()
                os._exit(CRASHED)
            assert self.err is not None
            raise OSError(self.err, os.strerror(self.err), self.handle.name)
        self.room -= len(data)
        return int(self.handle.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> Torn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def inject_writes(fault: Fault) -> None:
    """Give zbatch.store.storage an ``open`` whose matching files crash or fail mid-write."""

    def opener(path: Path, mode: str) -> Any:
        handle = open(path, mode)  # noqa: SIM115 - the caller's with-block closes it
        opened = fault.count("open", path)  # 0 for a file the fault does not concern
        if fault.errno is not None and opened >= fault.nth:
            return Torn(handle, room=0, err=fault.errno)
        if fault.point == "write" and opened == fault.nth:
            # Past Parquet's leading magic, so the torn file looks like the start of a part.
            return Torn(handle, room=64, err=None, crash=True)
        return handle

    vars(storage)["open"] = opener  # a module global shadows the builtin in storage.py only


def inject_renames(fault: Fault) -> None:
    """Crash around os.link and around the fsync of the folder a matching file went into."""
    real_link, real_fsync = os.link, os.fsync
    linked: dict[str, str] = {}  # folder -> the matching file last linked into it

    def link(
        src: StrOrBytesPath,
        dst: StrOrBytesPath,
        *,
        src_dir_fd: int | None = None,
        dst_dir_fd: int | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        fault.crash_at("before_link", src)
        real_link(
            src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks
        )
        fault.crash_at("after_link", src)
        if fault.matches(src):
            linked[os.path.realpath(os.path.dirname(os.fsdecode(dst)))] = os.fsdecode(src)

    def fsync(fd: FileDescriptorLike) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        path = os.readlink(f"/proc/self/fd/{number}")
        source = linked.pop(path, None) if stat.S_ISDIR(os.fstat(number).st_mode) else None
        if source is None:
            fault.crash_at("before_fsync", path)
        else:
            fault.crash_at("before_dirsync", source)
        real_fsync(number)
        if source is not None:
            fault.crash_at("after_dirsync", source)

    os.link, os.fsync = link, fsync


def inject_storage_ops(fault: Fault) -> None:
    """Crash before or after a LocalStorage operation on a matching name."""
    for op in STORAGE_OPS:
        setattr(storage.LocalStorage, op, _around(op, getattr(storage.LocalStorage, op), fault))


def _around(op: str, real: Callable[..., Any], fault: Fault) -> Callable[..., Any]:
    def call(self: storage.LocalStorage, name: str, *args: Any) -> Any:
        fault.crash_at(f"before:{op}", name)
        result = real(self, name, *args)
        fault.crash_at(f"after:{op}", name)
        return result

    return call


def inject_free(fault: Fault, free: int) -> None:
    """A disk that fills up: free_bytes() is the real figure until its nth call."""
    real = storage.LocalStorage.free_bytes
    calls = 0

    def free_bytes(self: storage.LocalStorage) -> int | None:
        nonlocal calls
        calls += 1
        return free if calls >= fault.nth else real(self)

    storage.LocalStorage.free_bytes = free_bytes  # type: ignore[method-assign]


def kill_self() -> None:
    """kill -9 of this process: no cleanup, no shielded close, nothing flushed."""
    os.kill(os.getpid(), signal.SIGKILL)


def inject_batch_kill(step: str) -> None:
    """kill -9 right after one step of batch mode (see the module doc)."""
    kind, _, what = step.partition(":")
    if kind == "saved":
        real_save = Ledger.save

        def save(self: Ledger, submission: Submission) -> None:
            real_save(self, submission)
            if what in (submission.state, submission.status):
                kill_self()

        setattr(Ledger, "save", save)  # noqa: B010 - a method replaced on the class
    elif what == "commit":
        real_commit = getattr(mode, "commit")  # noqa: B009 - imported there, not exported

        async def commit(*args: Any) -> None:
            await real_commit(*args)
            kill_self()

        setattr(mode, "commit", commit)  # noqa: B010 - the name batch mode calls
    else:
        real_call = getattr(BatchApi, what)

        async def call(self: BatchApi, *args: Any, **kwargs: Any) -> Any:
            result = await real_call(self, *args, **kwargs)
            kill_self()
            return result

        setattr(BatchApi, what, call)


def start() -> None:
    fault = Fault(json.loads(os.environ.get("ZB_FAULT") or "{}"))
    if fault.point == "write" or fault.errno is not None:
        inject_writes(fault)
    elif fault.point is not None and ":" in fault.point:
        inject_storage_ops(fault)
    elif fault.point is not None:
        inject_renames(fault)
    if fault.free is not None:
        inject_free(fault, fault.free)
    if fault.kill is not None:
        inject_batch_kill(fault.kill)
    if fault.fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fault.fsize, fault.fsize))
    sys.argv = ["zbatch", *sys.argv[1:]]
    main()


if __name__ == "__main__":
    start()
