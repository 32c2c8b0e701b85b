"""IdSet: the compact set of ids a run uses to spot repeated ids and to skip done ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import read_table

import zbatch
import zbatch.readers.base
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


def test_add_many_reports_repeats_within_and_across_blocks_like_a_set() -> None:
    """A block at a time (a resume's done rows) gives the same answers as one id at a time:
    the positions of ids met before, or earlier in the same block, through many growths."""
    rng = random.Random(5)
    ids = [f"row-{rng.randrange(20_000)}" for _ in range(40_000)]
    reference: set[str] = set()
    seen = IdSet(capacity=4)
    start = 0
    while start < len(ids):
        block = ids[start : start + rng.choice([1, 7, 300, 4096])]
        expected = []
        for at, row_id in enumerate(block):
            if row_id in reference:
                expected.append(at)
            reference.add(row_id)
        assert seen.add_many(block) == expected
        start += len(block)
    assert len(seen) == len(reference)
    assert seen.contains_many(sorted(reference)).all()
    assert not seen.contains_many(["row-20000", "", "row-1 "]).any()
    assert all(row_id in seen for row_id in reference)  # one at a time agrees
    assert seen.add_many([]) == [] and not seen.contains_many([]).any()


def test_ids_added_one_at_a_time_are_found_a_block_at_a_time_and_back() -> None:
    one, block = IdSet(), IdSet()
    ids = [f"id-{n}" for n in range(10_000)]
    for row_id in ids[::2]:
        one.add(row_id)
    block.update(ids[::2])
    assert one.contains_many(ids).tolist() == block.contains_many(ids).tolist()
    assert [row_id in block for row_id in ids] == [n % 2 == 0 for n in range(10_000)]
    assert block.add_many(ids) == list(range(0, 10_000, 2))


def test_a_zero_hash_in_a_block_is_kept() -> None:
    class ZeroHash(str):
        def __hash__(self) -> int:
            return 0

    seen = IdSet()
    assert seen.add_many([ZeroHash("a"), "b", ZeroHash("a")]) == [2]
    assert ZeroHash("a") in seen and not seen.add(ZeroHash("a"))


def test_sized_once_it_does_not_grow_at_its_capacity() -> None:
    """Sized for the rows to come (a run knows how many), the table is allocated once: no
    growth, so no moment holding the old table and the new one together."""
    seen = IdSet(capacity=50_000)
    slots = seen._slots
    seen.update([f"id-{n}" for n in range(50_000)])
    assert seen._slots is slots and len(seen) == 50_000
    assert len(slots) * slots.itemsize <= 50_000 * 11  # at most 3/4 full: ~10.7 bytes an id


def simulated_job(path: Path, outdir: Path) -> zbatch.Job:
    """A job answered in-process by --simulate, without faults or latency."""
    return zbatch.Job(
        input_path=str(path),
        output_dir=str(outdir),
        simulate=True,
        simulate_latency=0.0,
        simulate_rate_limited=0.0,
        simulate_server_error=0.0,
    )


def test_a_resume_logs_ids_repeated_inside_and_across_done_blocks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On resume, blocks of done rows go into the repeated-id set a block at a time: an id
    repeated inside a done block, or in a later one, is logged as duplicate_id once (at its
    own line), every other row is skipped, and the next run has nothing to add."""
    monkeypatch.setattr(zbatch.readers.base, "BLOCK_ROWS", 3)
    path = tmp_path / "in.jsonl"
    ids = [f"r{n}" for n in range(9)]

    def write(order: list[str]) -> None:
        lines = (json.dumps({"id": i, "prompt": f"prompt of {i}"}) for i in order)
        path.write_text("\n".join(lines) + "\n")

    job = simulated_job(path, tmp_path / "out")
    write(ids)
    assert zbatch.run(job).exit_code == 0
    columns = ["id", "content", "request_id"]  # a new request would have a new request_id
    first = read_table(Path(job.output_dir) / "results").select(columns).sort_by("id")
    # blocks of 3 lines: [r0 r1 r0] [r2 r3 r4] [r1 r5 r6] [r7 r8]
    write(["r0", "r1", "r0", "r2", "r3", "r4", "r1", "r5", "r6", "r7", "r8"])
    result = zbatch.run(job)
    assert result.exit_code == 1  # rows failed: the two repeats
    errors = read_table(Path(job.output_dir) / "errors").sort_by("id").to_pylist()
    assert [(e["id"], e["error_type"], e["message"]) for e in errors] == [
        ("r0", "duplicate_id", "in.jsonl line 3 repeats id 'r0'"),
        ("r1", "duplicate_id", "in.jsonl line 7 repeats id 'r1'"),
    ]
    assert result.stats.skipped == 9 and result.stats.input_rows == 11
    after = read_table(Path(job.output_dir) / "results").select(columns).sort_by("id")
    assert after.to_pylist() == first.to_pylist()  # nothing sent again
    again = zbatch.run(job)
    assert read_table(Path(job.output_dir) / "errors").num_rows == 2
    assert again.stats.skipped == 9 and first.column("id").to_pylist() == ids


def test_a_run_lets_its_id_sets_go_before_it_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The done ids and the repeated-id set (~100 MB each at ten million rows) are not alive
    while the run's end reads the OUTDIR again for report.html: a resume of a finished
    10M-row OUTDIR peaked at 445 MB with them."""
    import gc

    import zbatch.results.page

    alive: list[int] = []

    def count_id_sets(outdir: object, log: object, **_: object) -> None:
        # No gc.collect() here: ids held only by reference cycles not yet collected are
        # still in memory (and listed by gc.get_objects), so they count.
        alive.append(sum(len(o) for o in gc.get_objects() if isinstance(o, IdSet)))

    monkeypatch.setattr(zbatch.results.page, "write_run_report", count_id_sets)
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"r{n}", "prompt": f"p{n}"}) + "\n" for n in range(50))
    )
    job = simulated_job(path, tmp_path / "out")
    for _ in range(2):  # a run, then a resume holding the 50 done ids
        assert zbatch.run(job).exit_code == 0
    assert alive == [0, 0]


def test_meet_marks_ids_of_the_set_once_like_a_set_of_met_ids_through_growths() -> None:
    """meet and meet_many (a pass over the input marking done ids in the resume state's own
    set): an id not in the set is not marked; one in it is new once, then met before,
    whether met alone or in a block (twice in one block too), and a growth keeps the marks."""
    rng = random.Random(7)
    members = [f"row-{n}" for n in range(0, 20_000, 2)]
    ids = IdSet(capacity=4)
    ids.update(members[: len(members) // 2])
    met: set[str] = set()
    start, grown = 0, False
    stream = [f"row-{rng.randrange(20_000)}" for _ in range(30_000)]
    while start < len(stream):
        if not grown and start > len(stream) // 2:  # a growth with marks in the table
            ids.update(members[len(members) // 2 :])
            grown = True
        block = stream[start : start + rng.choice([1, 5, 300, 4096])]
        start += len(block)
        inside = [row_id in ids for row_id in block]
        expected = []
        for at, row_id in enumerate(block):
            if inside[at]:
                if row_id in met:
                    expected.append(at)
                met.add(row_id)
        if len(block) == 1:
            first = ids.meet(block[0])
            assert first == (None if not inside[0] else not expected)
        else:
            present, again = ids.meet_many(block)
            assert present.tolist() == inside and again == expected
    assert grown and met
    assert all(ids.meet(row_id) is False for row_id in met)


def test_a_resume_logs_a_done_id_repeated_between_single_rows_and_done_blocks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A done id is marked as met in the done ids, whether its row comes in a block of done
    rows or alone (its block holds a new row): met again either way, it is logged as
    duplicate_id at its own line, once; the new rows are answered, nothing else is sent."""
    monkeypatch.setattr(zbatch.readers.base, "BLOCK_ROWS", 3)
    path = tmp_path / "in.jsonl"

    def write(order: list[str]) -> None:
        lines = (json.dumps({"id": i, "prompt": f"prompt of {i}"}) for i in order)
        path.write_text("\n".join(lines) + "\n")

    job = simulated_job(path, tmp_path / "out")
    write([f"r{n}" for n in range(6)])
    assert zbatch.run(job).exit_code == 0
    results = Path(job.output_dir) / "results"
    columns = ["id", "content", "request_id"]
    first = read_table(results).select(columns).sort_by("id")
    # blocks of 3: [r0 r1 n0] alone (n0 is new), [r2 r0 r3] done, [r4 r5 r2] done,
    # [n1 r4 r1] alone
    write(["r0", "r1", "n0", "r2", "r0", "r3", "r4", "r5", "r2", "n1", "r4", "r1"])
    result = zbatch.run(job)
    assert result.exit_code == 1  # the repeats
    errors = read_table(Path(job.output_dir) / "errors").sort_by("id").to_pylist()
    assert [(e["id"], e["error_type"], e["message"]) for e in errors] == [
        ("r0", "duplicate_id", "in.jsonl line 5 repeats id 'r0'"),
        ("r1", "duplicate_id", "in.jsonl line 12 repeats id 'r1'"),
        ("r2", "duplicate_id", "in.jsonl line 9 repeats id 'r2'"),
        ("r4", "duplicate_id", "in.jsonl line 11 repeats id 'r4'"),
    ]
    assert (result.stats.ok, result.stats.skipped, result.stats.input_rows) == (2, 6, 12)
    after = read_table(results).select(columns).sort_by("id").to_pylist()
    assert [row for row in after if row["id"].startswith("r")] == first.to_pylist()
    answers = {row["id"]: row["content"] for row in after if row["id"].startswith("n")}
    assert answers == {  # each the simulated answer to its own prompt
        i: f"Simulated answer ({len(f'prompt of {i}')} characters of prompt)." for i in ("n0", "n1")
    }
