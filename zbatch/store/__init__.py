"""The output directory: where it is kept (Storage), its layout (OutputDir), its parts."""

from .compaction import write_batches
from .outdir import ERRORS, RESULTS, OutputDir, RunSession, open_storage
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
    "RunSession",
    "Storage",
    "open_storage",
    "room_error",
    "write_batches",
]
