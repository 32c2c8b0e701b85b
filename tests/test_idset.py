"""IdSet: the compact set of ids the run uses to spot repeated ids."""

from __future__ import annotations

import random

from zbatch.idset import IdSet


def test_add_reports_new_and_repeated_ids_like_a_set_through_many_growths() -> None:
    rng = random.Random(3)
    ids = [f"row-{rng.randrange(30_000)}" for _ in range(50_000)]
    reference: set[str] = set()
    seen = IdSet(capacity=4)
    for row_id in ids:
        assert seen.add(row_id) == (row_id not in reference), row_id
        reference.add(row_id)
    assert len(seen) == len(reference)
    assert all(row_id in seen for row_id in reference)
    assert "row-30000" not in seen and "" not in seen


def test_ids_whose_hash_is_zero_are_kept() -> None:
    class ZeroHash(str):
        def __hash__(self) -> int:
            return 0

    seen = IdSet()
    assert seen.add(ZeroHash("a"))
    assert ZeroHash("a") in seen
    assert not seen.add(ZeroHash("a"))


def test_it_stays_compact() -> None:
    seen = IdSet()
    for n in range(100_000):
        seen.add(f"id-{n:09d}")
    slots = seen._slots
    assert len(slots) * slots.itemsize <= 4 * 1024 * 1024  # 100k ids in at most 4 MB
