"""A compact set of the ids met so far in one pass over the input, to spot repeats.

A Python ``set[str]`` of a million ids costs ~100 MB (each id is its own str object); this
keeps only each id's 64-bit hash in one flat array, ~16 MB per million. Two different ids
with the same hash would make the second look like a repeat: with a million ids the odds
are about 1 in 30 million per run, and the cost is one row logged as ``duplicate_id``,
which the next run (a new process, so new hashes) sends again.
"""

from __future__ import annotations

from array import array

_EMPTY = 0
_MASK64 = (1 << 64) - 1


class IdSet:
    """Open addressing with linear probing over 64-bit hashes; grows at half full."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        size = 1 << max(4, (capacity * 2 - 1).bit_length())
        self._slots = array("Q", [_EMPTY]) * size
        self._mask = size - 1
        self._count = 0

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
        if self._count * 2 > len(self._slots):
            self._grow()
        return True

    def __contains__(self, item: str) -> bool:
        key = _key(item)
        return self._slots[self._slot(key)] == key

    def _slot(self, key: int) -> int:
        """Where ``key`` is, or the empty slot where it would go."""
        slots, mask = self._slots, self._mask
        index = key & mask
        while (current := slots[index]) != _EMPTY and current != key:
            index = (index + 1) & mask
        return index

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", [_EMPTY]) * (len(old) * 2)
        self._mask = len(self._slots) - 1
        for key in old:
            if key != _EMPTY:
                self._slots[self._slot(key)] = key


def _key(item: str) -> int:
    return (hash(item) & _MASK64) or 1  # 0 marks an empty slot
