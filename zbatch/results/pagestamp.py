"""Whether the report.html a run left still shows what the OUTDIR holds, so that the end of
a later run can keep it rather than read every result column again.

What a run's page shows comes from job.json, the committed parts, the spend ledgers, the
input's row count and the last run's cache figures (:func:`zbatch.results.quality.build_report`).
:func:`stamp` sums those up (the parts by name: a committed part is never rewritten under its
name); the page carries its stamp and the time it was written (:func:`marker`). A run whose
stamp is the page's (it committed nothing, and nothing else changed what the page is built
from) keeps the page: at ten million rows that is ~5 s of a resume with nothing to send
(docs/performance.md, "10,000,000 rows"). With a gold column the page also reads the input's
labels, which the stamp does not cover: such a page is always written anew.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .._version import __version__
from ..store import OutputDir
from ..store.layout import TABLES

# Raised whenever what a page shows, or how, changes without a new version number.
PAGE_FORMAT = 1
_MARKER = re.compile(rb'<meta name="zbatch-figures" content="([0-9a-f]{32}) ([^"]{1,64})">')
_HEAD_BYTES = 4096  # the marker is in the page's head, before plotly.js


def stamp(outdir: OutputDir, input_rows: int, script: Path) -> str | None:
    """What the run's page of ``outdir`` is built from, as a digest; None when that is more
    than the stamp covers (a gold column: the input's labels)."""
    job = outdir.read_job()
    if job["settings"].get("gold_column"):
        return None
    spend = outdir.total_spend()
    summary = outdir.read_summary() or {}
    figures_of = {
        "format": [PAGE_FORMAT, __version__, str(script), script.stat().st_size],
        "job": job,
        "parts": {table: sorted(outdir.parts(table).names) for table in TABLES},
        "input_rows": input_rows,
        "spent": None if spend is None else spend.usd,
        "cache": summary.get("cache"),
    }
    blob = json.dumps(figures_of, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def marker(digest: str, written: str) -> str:
    """The page's head element that records its stamp and when it was ``written`` (ISO
    8601, UTC)."""
    return f'<meta name="zbatch-figures" content="{digest} {written}">'


def written_at(page: bytes | None, digest: str) -> str | None:
    """When ``page`` was written, if it carries the stamp ``digest``; else None."""
    found = None if page is None else _MARKER.search(page[:_HEAD_BYTES])
    if found is None or found.group(1).decode() != digest:
        return None
    return found.group(2).decode()
