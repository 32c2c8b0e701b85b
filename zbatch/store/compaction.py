"""Compaction: a table's parts merged into one, in an order that keeps every id at most once
for any reader at any moment.

The merged part is staged under a hidden name, the old parts go, then the merged part takes a
new name in the last old part's place (so the error log keeps its order). A journal written
first lets :func:`recover` finish or undo a compaction a crash cut off.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import StoreError
from .parts import Parts, is_part

if TYPE_CHECKING:
    from .outdir import OutputDir
    from .storage import Storage

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


def staged_view(
    storage: Storage, table: str, listing: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The parts of a table as :func:`recover` would leave them, read without writing:
    (part names in commit order, {name: the file that holds it} where that differs).

    After an interrupted compaction whose merged part is staged, the old parts it merged
    are left out (some may be gone already) and the staged file stands in for the merged
    part, so a reader (`status`, `export`, ``read_results``) never sees fewer rows than are
    committed, nor one twice, even on a read-only OUTDIR that no run has recovered yet."""
    names = [name for name in listing if is_part(name)]
    if COMPACT_JOURNAL not in listing:
        return names, {}
    blob = storage.read_bytes(f"{table}/{COMPACT_JOURNAL}")
    if blob is None:  # the compaction finished since the listing
        return names, {}
    try:
        journal = json.loads(blob)
        staged, target, remove = journal["staged"], journal["target"], set(journal["remove"])
    except (ValueError, TypeError, KeyError):
        raise StoreError(
            f"{storage.location}/{table}/{COMPACT_JOURNAL} (left by an interrupted compact) is "
            "unreadable; run `zbatch compact` or a run on this OUTDIR to recover it"
        ) from None
    if staged not in listing or target in names:
        return names, {}  # not staged (the old parts stand), or already moved into place
    return sorted([name for name in names if name not in remove] + [target]), {target: staged}


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
