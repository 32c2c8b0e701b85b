"""Result columns as numpy arrays, for the sums and counts of ``status`` and the report.

Arrow's compute functions are a library of their own (``pyarrow._compute``, ~7 MB resident once
loaded), and numpy is loaded already (pyarrow imports it). Token sums, cache hits, latencies and
answers per second are taken here with numpy, so the report page at a run's end does not load
them (docs/performance.md, "Issue 25, fifth session"); only label columns (group-bys, joins:
:mod:`.labels`) use Arrow's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa


def present(column: pa.Array) -> npt.NDArray[np.bool_]:
    """Which values of ``column`` are not null."""
    if not column.null_count:
        return np.ones(len(column), dtype=bool)
    bitmap = column.buffers()[0]
    if bitmap is None:  # a null-type column: no bitmap, all null
        return np.zeros(len(column), dtype=bool)
    return _bits(bitmap, column)


def numbers(column: pa.Array, fill: int = 0) -> npt.NDArray[np.int64]:
    """An integer or timestamp column (a timestamp as its count of units since the epoch)
    as int64, nulls as ``fill``."""
    if pa.types.is_timestamp(column.type):
        column = column.view(pa.int64())
    values = column.to_numpy(zero_copy_only=False)  # with nulls: floats, NaN for each
    if column.null_count:
        values = np.where(present(column), np.nan_to_num(values), fill)
    integers: npt.NDArray[np.int64] = values.astype(np.int64, copy=False)
    return integers


def reals(column: pa.Array) -> npt.NDArray[np.float64]:
    """The values of a numeric column that are not null, as float64."""
    values: npt.NDArray[np.float64] = column.to_numpy(zero_copy_only=False).astype(np.float64)
    return values[present(column)] if column.null_count else values


def flags(column: pa.Array) -> npt.NDArray[np.bool_]:
    """A boolean column as numpy booleans, nulls as False."""
    values = _bits(column.buffers()[1], column)
    return values & present(column) if column.null_count else values


def _bits(buffer: pa.Buffer, column: pa.Array) -> npt.NDArray[np.bool_]:
    """One bit per value of ``column`` (least significant first, as Arrow packs them)."""
    unpacked = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")
    return unpacked[column.offset : column.offset + len(column)].astype(bool)
