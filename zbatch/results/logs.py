"""`zbatch logs`: an OUTDIR's run.log, read whole or from where the last read ended."""

from __future__ import annotations

from ..errors import JobError
from ..store import OutputDir
from ..store.outdir import RUN_LOG


def read_log(outdir: OutputDir, start: int = 0) -> tuple[str, int]:
    """run.log's text from byte ``start`` to the last whole line, and the offset to read on
    from (a line still being written is left for the next read). A log shorter than ``start``
    (replaced by --force) is read again from the beginning."""
    data = outdir.storage.read_bytes(RUN_LOG)
    if data is None:
        if outdir.read_job_if_any() is None:
            raise JobError(f"{outdir.location} is not a zbatch output directory (no job.json)")
        return "", 0
    if len(data) < start:
        start = 0
    end = data.rfind(b"\n", start) + 1
    if end <= start:
        return "", start
    return data[start:end].decode("utf-8", errors="replace"), end
