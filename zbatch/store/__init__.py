"""The output directory: where it is kept (Storage), its names (layout), the OutputDir, its parts.

A run holds one through :func:`zbatch.store.session.open_run` (imported with the run: it brings
the journal and anyio, which the commands that only read an OUTDIR start without)."""

from .compaction import write_batches
from .layout import ERRORS, RESULTS
from .outdir import OutputDir, open_storage
from .parts import Parts, PartWriter
from .state import ResumeState
from .storage import LocalStorage, Storage, room_error

__all__ = [
    "ERRORS",
    "RESULTS",
    "LocalStorage",
    "OutputDir",
    "PartWriter",
    "Parts",
    "ResumeState",
    "Storage",
    "open_storage",
    "room_error",
    "write_batches",
]
