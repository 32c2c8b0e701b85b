"""Compaction: a table's parts merged into one, in an order that keeps every id at most once
for any reader at any moment.

The merged part is staged under a hidden name, the old parts go, then the merged part takes a
new name in the last old part's place (so the error log keeps its order). A journal written
first lets :func:`recover` finish or undo a compaction a crash cut off.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .parts import Parts

if TYPE_CHECKING:
    from .outdir import OutputDir

COMPACT_JOURNAL = ".compact-journal.json"


def compact_table(outdir: OutputDir, table: str, parts: Parts) -> int:
    """Merge the table's parts (after :func:`recover`); how many parts it has then."""
    if len(parts.names) < 2:
        return len(parts.names)
    target = merged_name(parts.names[-1])
    staged = f".compact-{target}"
    journal = {"staged": staged, "target": target, "remove": parts.names}
    outdir.write_json(f"{table}/{COMPACT_JOURNAL}", journal)
    outdir.storage.create(f"{table}/{staged}", functools.partial(_merge, parts))
    recover(outdir, table)
    return 1


def recover(outdir: OutputDir, table: str) -> None:
    """Finish (merged part staged) or forget (not staged) an interrupted compaction."""
    journal = outdir.read_json(f"{table}/{COMPACT_JOURNAL}")
    if journal is None:
        return
    storage = outdir.storage
    staged, target = f"{table}/{journal['staged']}", f"{table}/{journal['target']}"
    names = storage.list(table)
    if journal["staged"] in names:
        for name in journal["remove"]:
            storage.delete(f"{table}/{name}")
        if journal["target"] in names:  # the move was cut off after giving the new name
            storage.delete(staged)
        else:
            storage.move(staged, target)
    storage.delete(f"{table}/{COMPACT_JOURNAL}")


def merged_name(last: str) -> str:
    """A new name for a merged part, sorting where the last old part did (readers and resume
    read parts in name order): part-X-00007.parquet -> part-X-00007.merged.parquet.

    Never an old part's name: a reader that listed the folder before the swap and opened
    that name after it would get the merged rows on top of the old parts it had read."""
    return f"{last.removesuffix('.parquet')}.merged.parquet"


def _merge(parts: Parts, handle: Any) -> None:
    write_batches(parts.schema, parts.batches(), handle)


def write_batches(schema: pa.Schema, batches: Iterator[pa.RecordBatch], handle: Any) -> None:
    """One Parquet file from batches as they come: merging or exporting a million rows holds
    one batch, not the table."""
    import pyarrow.parquet as pq

    with pq.ParquetWriter(handle, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
