"""Who owns which ids of an OUTDIR: no two live writers ever own one id.

    with own(storage, (3, 8)):   # shard 3 of 8: LockedError (exit 75) if a writer overlaps
        ...

Shard K of N owns the ids whose hash h has ``h % N == K`` (:mod:`zbatch.shard`); a whole-job
run (and ``compact``) is shard 0 of 1, which owns every id. Shards K/N and J/M own a common id
exactly when ``K ≡ J (mod gcd(N, M))`` (the Chinese remainder theorem; the 64-bit hash takes
every residue), so shards of one split never overlap, a whole run overlaps everything, and
two splits overlap unless their residues differ modulo the common factor (0/2 and 1/4 are
disjoint, 0/2 and 0/4 are not).

Each writer holds the lock of its own shard (``.lock`` for 0/1, ``.lock-KofN`` otherwise:
a kernel lock on a local disk, a lease on object storage), then looks at every other shard
lock in the OUTDIR and is refused if one that overlaps it is held. Taking one's own lock
before looking means that of two overlapping writers starting at the same moment at least
one sees the other (both may, and both then stop with exit 75: nobody was sent anything).
No split is recorded: N may change between runs, or even while other shards run, as long as
no live writer overlaps.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator

from ..errors import LockedError
from .storage import Storage

LOCK = ".lock"
WHOLE = (0, 1)
_SHARD_LOCK = re.compile(r"\.lock-(\d+)of(\d+)")

Share = tuple[int, int]  # (K, N): shard K of N; (0, 1) is the whole job


def lock_name(share: Share) -> str:
    """The lock of a shard: ``.lock`` for the whole job, ``.lock-3of8`` for shard 3 of 8."""
    return LOCK if share == WHOLE else f"{LOCK}-{share[0]}of{share[1]}"


def share_of_lock(name: str) -> Share | None:
    """The shard a lock name belongs to; None for a file that is not a shard's lock."""
    if name == LOCK:
        return WHOLE
    match = _SHARD_LOCK.fullmatch(name)
    if match is None:
        return None
    index, count = int(match[1]), int(match[2])
    return (index, count) if 0 <= index < count else None


def share_of_tag(tag: str) -> Share | None:
    """The shard a run tag names ("3of8"; "" for the whole job); None if it names none."""
    return share_of_lock(f"{LOCK}-{tag}" if tag else LOCK)


def overlaps(a: Share, b: Share) -> bool:
    """Whether two shards own a common id."""
    return (a[0] - b[0]) % math.gcd(a[1], b[1]) == 0


def describe(share: Share) -> str:
    return "the whole job" if share == WHOLE else f"shard {share[0]}/{share[1]}"


def live_overlapping(storage: Storage, share: Share) -> tuple[str, str] | None:
    """A held lock, other than ``share``'s own, of a shard that overlaps it: (name, holder)."""
    mine = lock_name(share)
    for name in storage.list(""):
        other = share_of_lock(name)
        if name == mine or other is None or not overlaps(share, other):
            continue
        holder = storage.holder(name)
        if holder is not None:
            return name, holder
    return None


@contextlib.contextmanager
def own(storage: Storage, share: Share | None) -> Iterator[None]:
    """Hold ``share``'s lock (None: the whole job) while no overlapping writer is live;
    LockedError (exit 75) naming the first overlapping holder otherwise."""
    share = share or WHOLE
    with storage.lock(lock_name(share)):
        found = live_overlapping(storage, share)
        if found is not None:
            name, holder = found
            other = share_of_lock(name)
            assert other is not None
            raise LockedError(
                f"another zbatch run holds {storage.location}/{name} ({holder}): "
                f"{describe(other)} owns ids of {describe(share)}; wait for it to finish "
                "(shards of one split, K/N with the same N, run side by side)"
            )
        yield
