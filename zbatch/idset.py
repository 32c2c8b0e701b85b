"""A compact set of ids: the ids met so far in one pass over the input (to spot repeats), and
the ids earlier runs answered (what a resume skips).

A Python ``set[str]`` of a million ids costs ~100 MB (each id is its own str object); this
keeps only each id's 64-bit hash in one flat table at most 3/4 full, ~11 MB per million
(107 MB at ten million). Ids come one at a time (a row to send) or a block at a time (a
resume's blocks of done rows: hashed and probed with numpy, a few hundred nanoseconds an id
rather than microseconds, so ten million done ids are read back in seconds).

Two different ids with the same hash look like one. The hashes are Python's own ``hash``,
seeded anew in every process, so the odds are per run: about n * m / 2**64 for m ids
looked up among n, 1 in 180,000 for ten million against ten million. The cost, when it
happens: a row logged as ``duplicate_id``, or a row taken as answered before and not sent;
the next run (a new process, so new hashes) sends either again (its id has no result).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_EMPTY = 0
_MASK64 = (1 << 64) - 1
_FEW = 32  # keys left probing below which a block goes on one key at a time

Keys = npt.NDArray[np.uint64]
Slots = npt.NDArray[np.int64]  # where ids are in a table, -1 for absent ones


class IdSet:
    """Open addressing with linear probing over 64-bit hashes; grows past 3/4 full.

    Its ids can also be marked as met (:meth:`meet`, :meth:`meet_many`), one flag a slot
    (a byte per slot, made on the first mark): a run's pass over the input marks the done
    ids in the resume state's own set rather than adding them to a second one."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._count = 0
        self._marks: npt.NDArray[np.bool_] | None = None
        self._allocate(max(16, capacity * 4 // 3 + 1))

    def _allocate(self, size: int) -> None:
        # Zeroed as it is first touched (calloc): no zeroed copy to fill it from, which held
        # a second table's worth of memory while one was made (107 MB at ten million ids).
        self._table: Keys = np.zeros(size, dtype=np.uint64)
        self._slots = self._table.data  # the same memory, read one at a time

    def __len__(self) -> int:
        return self._count

    def add(self, item: str) -> bool:
        """Add ``item``; False if it was already there."""
        key = _key(item)
        index = self._slot(key)
        if self._slots[index] == key:
            return False
        self._slots[index] = key
        self._count += 1
        if self._count * 4 > len(self._slots) * 3:
            self._grow(self._count)
        return True

    def __contains__(self, item: str) -> bool:
        key = _key(item)
        return self._slots[self._slot(key)] == key

    def _slot(self, key: int) -> int:
        """Where ``key`` is, or the empty slot where it would go."""
        slots, size = self._slots, len(self._slots)
        index = key % size
        while (current := slots[index]) != _EMPTY and current != key:
            index += 1
            if index == size:
                index = 0
        return index

    def add_many(self, items: Sequence[str]) -> list[int]:
        """Add every id of ``items``; the positions of those that were there already (or
        earlier in ``items``), in order."""
        keys = _keys(items)
        if (self._count + len(keys)) * 4 > len(self._slots) * 3:
            self._grow(self._count + len(keys))
        ordered = np.sort(keys)
        if np.all(ordered[1:] != ordered[:-1]):  # the usual case: no id twice in the block
            return [int(i) for i in np.flatnonzero(self._probe(keys, insert=True))]
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        repeated = self._probe(unique, insert=True)[inverse]
        later = np.ones(len(keys), dtype=bool)
        later[first] = False
        return [int(i) for i in np.flatnonzero(repeated | later)]

    def update(self, items: Sequence[str]) -> None:
        """Add every id of ``items``."""
        self.add_many(items)

    def contains_many(self, items: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Whether each id of ``items`` is in the set."""
        return self._probe(_keys(items), insert=False)

    def meet(self, item: str) -> bool | None:
        """Mark ``item`` as met: None when it is not in the set, else whether this is the
        first time."""
        key = _key(item)
        index = self._slot(key)
        if self._slots[index] != key:
            return None
        marks = self._met()
        first = not marks[index]
        marks[index] = True
        return first

    def slots_of(self, items: Sequence[str]) -> Slots:
        """Where each id of ``items`` is in the table, -1 for those not in the set (valid
        until the set grows)."""
        positions = np.full(len(items), -1, dtype=np.int64)
        self._probe(_keys(items), insert=False, positions=positions)
        return positions

    def meet_many(
        self, items: Sequence[str], slots: Slots | None = None
    ) -> tuple[npt.NDArray[np.bool_], list[int]]:
        """Mark each id of ``items`` that is in the set as met: which of ``items`` are in
        the set, and the positions of those met before (or earlier in ``items``), in order.
        ``slots``: :meth:`slots_of` the same ``items``, when it was just asked."""
        positions = self.slots_of(items) if slots is None else slots
        present = positions >= 0
        at = positions[present]
        marks = self._met()
        again = marks[at]
        ordered = np.sort(at)
        if np.any(ordered[1:] == ordered[:-1]):  # an id twice in the block: the later ones
            later = np.ones(len(at), dtype=bool)
            later[np.unique(at, return_index=True)[1]] = False
            again |= later
        marks[at] = True
        return present, [int(i) for i in np.flatnonzero(present)[again]]

    def _met(self) -> npt.NDArray[np.bool_]:
        if self._marks is None:
            self._marks = np.zeros(len(self._slots), dtype=bool)
        return self._marks

    def _probe(
        self, keys: Keys, *, insert: bool, positions: Slots | None = None
    ) -> npt.NDArray[np.bool_]:
        """Whether each of ``keys`` (distinct, when inserting) was in the table; with
        ``insert``, those that were not are added; ``positions`` gets the slot of each key
        found (when looking up).

        All keys take a probe step at once, while there are many; the few that are still
        looking after that (long runs of taken slots) go on one at a time."""
        table, size = self._table, np.uint64(len(self._slots))
        found = np.zeros(len(keys), dtype=bool)
        where = keys % size
        todo = np.arange(len(keys))
        while len(todo) > _FEW:
            at, wanted = where[todo], keys[todo]
            current = table[at]
            hit = current == wanted
            found[todo[hit]] = True
            if positions is not None:
                positions[todo[hit]] = at[hit]
            empty = current == _EMPTY
            settled = hit | empty
            if insert:
                # Keys after the same empty slot: one of them gets it, the others go on.
                table[at[empty]] = wanted[empty]
                won = empty & (table[at] == wanted)
                self._count += int(np.count_nonzero(won))
                settled = hit | won
            todo = todo[~settled]
            step = where[todo] + np.uint64(1)
            where[todo] = np.where(step == size, np.uint64(0), step)
        slots = self._slots
        for i in todo.tolist():
            key = int(keys[i])
            index = self._slot(key)
            if slots[index] == key:
                found[i] = True
                if positions is not None:
                    positions[i] = index
            elif insert:
                slots[index] = key
                self._count += 1
        return found

    def _grow(self, capacity: int) -> None:
        """A table twice the size, or more to hold ``capacity`` ids at most 3/4 full (the
        marks moved with their ids)."""
        occupied = self._table != _EMPTY
        old = self._table[occupied]
        met = None if self._marks is None else old[self._marks[occupied]]
        self._allocate(max(len(self._slots) * 2, capacity * 4 // 3 + 1))
        self._count, self._marks = 0, None
        self._probe(old, insert=True)
        if met is not None:
            positions = np.full(len(met), -1, dtype=np.int64)
            self._probe(met, insert=False, positions=positions)
            self._met()[positions] = True


def _key(item: str) -> int:
    return (hash(item) & _MASK64) or 1  # 0 marks an empty slot


def _keys(items: Sequence[str]) -> Keys:
    """:func:`_key` of each item, as one array."""
    keys = np.fromiter(map(hash, items), dtype=np.int64, count=len(items)).view(np.uint64)
    keys[keys == _EMPTY] = 1
    return keys
