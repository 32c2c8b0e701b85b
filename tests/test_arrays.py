"""zbatch.results.arrays: result columns as numpy arrays equal Arrow's own compute functions,
with nulls, slices (an offset into the buffers) and all-null columns."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from zbatch.results.arrays import flags, numbers, present, reals
from zbatch.schema import UTC_MS


def columns(seed: int) -> list[pa.Array]:
    """Columns of the result types, with and without nulls, whole and sliced at odd places."""
    rng = random.Random(seed)
    size = rng.randrange(1, 3000)

    def maybe(value: object, share: float) -> object:
        return None if rng.random() < share else value

    made = []
    for share in (0.0, 0.1, 1.0):
        made += [
            pa.array([maybe(rng.randrange(-5, 10**12), share) for _ in range(size)], pa.int64()),
            pa.array([maybe(rng.randrange(0, 5000), share) for _ in range(size)], pa.int32()),
            pa.array([maybe(1_760_000_000_000 + rng.randrange(10**8), share) for _ in range(size)])
            .cast(pa.int64())
            .view(UTC_MS),
            pa.array([maybe(rng.random() * 2, share) for _ in range(size)], pa.float64()),
            pa.array([maybe(rng.random() < 0.5, share) for _ in range(size)], pa.bool_()),
        ]
    start = rng.randrange(size)
    return made + [column.slice(start, rng.randrange(size - start + 1)) for column in made]


@pytest.mark.parametrize("seed", range(4))
def test_numpy_columns_equal_arrow_compute(seed: int) -> None:
    for column in columns(seed):
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        assert present(column).tolist() == valid.tolist()
        if pa.types.is_boolean(column.type):
            assert flags(column).tolist() == pc.fill_null(column, False).to_pylist()
        elif pa.types.is_floating(column.type):
            assert reals(column).tolist() == pc.drop_null(column).to_pylist()
        else:
            ints = column.view(pa.int64()) if pa.types.is_timestamp(column.type) else column
            for fill in (0, -1):
                expected = pc.fill_null(ints.cast(pa.int64()), fill).to_pylist()
                assert numbers(column, fill).tolist() == expected
            assert reals(ints).tolist() == [float(v) for v in pc.drop_null(ints).to_pylist()]


def test_a_column_of_the_null_type_is_all_absent() -> None:
    assert present(pa.nulls(3)).tolist() == [False] * 3
    assert numbers(pa.nulls(2, pa.int64())).dtype == np.int64
