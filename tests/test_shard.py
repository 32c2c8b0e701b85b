"""The shard rule and how a shard is named on the command line and by array schedulers."""

from __future__ import annotations

import hashlib

import pytest

from zbatch.errors import JobError
from zbatch.shard import Shard, shard_of


def reference_shard(row_id: str, count: int) -> int:
    """SPEC's rule written out independently: sha1, first 8 bytes, big-endian, mod N."""
    first8 = hashlib.sha1(row_id.encode("utf-8")).hexdigest()[:16]
    return int(first8, 16) % count


IDS = [f"row-{i}" for i in range(3000)] + ["", "é", "日本語", "a/b", "0"]


@pytest.mark.parametrize("count", [1, 2, 3, 8, 1000])
def test_contains_follows_the_sha1_rule(count: int) -> None:
    """Every id lands in the shard SPEC's sha1 rule names, and not in the next one."""
    for row_id in IDS:
        expected = reference_shard(row_id, count)
        assert shard_of(row_id, count) == expected
        assert Shard(expected, count).contains(row_id)
        if count > 1:
            assert not Shard((expected + 1) % count, count).contains(row_id)


def test_shards_partition_the_ids_evenly() -> None:
    """Four shards split 3000 ids into disjoint sets that together hold every id, each a fair
    share (the hash is uniform; the bound is ~6 standard deviations wide)."""
    parts = [{i for i in IDS if Shard(k, 4).contains(i)} for k in range(4)]
    assert set().union(*parts) == set(IDS)
    assert sum(len(p) for p in parts) == len(IDS)
    for part in parts:
        assert 650 < len(part) < 850


def test_known_value() -> None:
    """sha1("abc") is the FIPS 180 test vector a9993e364706816a...; a change of rule shows."""
    assert shard_of("abc", 10) == 0xA9993E364706816A % 10 == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0/1", Shard(0, 1)), ("3/8", Shard(3, 8)), (" 7 / 8 ", Shard(7, 8))],
)
def test_parse_explicit(spec: str, expected: Shard) -> None:
    assert Shard.parse(spec, {}) == expected


def test_str_and_tag() -> None:
    assert str(Shard(3, 8)) == "3/8"
    assert Shard(3, 8).tag == "3of8"


def test_auto_from_kubernetes_index() -> None:
    """An Indexed Job's pod gets its shard from JOB_COMPLETION_INDEX."""
    assert Shard.parse("auto/4", {"JOB_COMPLETION_INDEX": "2"}) == Shard(2, 4)


def test_auto_from_slurm_array_counts_from_the_first_task() -> None:
    """`--array=1-4` numbers tasks 1..4; they become shards 0..3."""
    env = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert Shard.parse("auto/4", env) == Shard(3, 4)
    assert Shard.parse("auto/4", {"SLURM_ARRAY_TASK_ID": "0"}) == Shard(0, 4)


def test_kubernetes_index_wins_over_slurm() -> None:
    env = {"JOB_COMPLETION_INDEX": "1", "SLURM_ARRAY_TASK_ID": "3"}
    assert Shard.parse("auto/4", env) == Shard(1, 4)


@pytest.mark.parametrize(
    ("spec", "env", "message"),
    [
        ("8/8", {}, "--shard: the shard index must be between 0 and 7, not 8"),
        ("-1/8", {}, "--shard: the shard index must be between 0 and 7, not -1"),
        ("0/0", {}, "--shard: the shard count must be at least 1, not 0"),
        ("3", {}, "--shard: expected K/N or auto/N (e.g. 3/8), not '3'"),
        ("x/8", {}, "--shard: the shard index K must be a whole number"),
        ("1/y", {}, "--shard: the shard count N must be a whole number"),
        ("auto/4", {}, "--shard auto/4: neither $JOB_COMPLETION_INDEX"),
        (
            "auto/4",
            {"JOB_COMPLETION_INDEX": "4"},
            "--shard auto/4: $JOB_COMPLETION_INDEX=4 is not one of 4 shards; "
            "set completions: 4 in the Job",
        ),
        (
            "auto/4",
            {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1"},
            "--shard auto/4: Slurm array task 5 (the array starts at 1) is not one of 4 "
            "shards; submit the array as --array=0-3",
        ),
        ("auto/4", {"SLURM_ARRAY_TASK_ID": "one"}, "$SLURM_ARRAY_TASK_ID must be a whole"),
    ],
)
def test_bad_specs_are_one_line_job_errors(spec: str, env: dict[str, str], message: str) -> None:
    """A bad shard is a JobError (exit 2) whose one-line message says what is wrong."""
    with pytest.raises(JobError) as caught:
        Shard.parse(spec, env)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert caught.value.exit_code == 2
