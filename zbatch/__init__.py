"""zbatch: run tables of prompts through the Z.AI (or any OpenAI-compatible) chat API,
resumably, into Parquet.

    import zbatch
    job = zbatch.Job.from_toml("jobs/sentiment.toml", simulate=True)
    result = zbatch.run(job)            # or: await zbatch.arun(job)
    result.exit_code, result.stats.ok
    zbatch.read_results(job.output_dir)  # a pyarrow.Table, one row per id

The names below are imported on first use, so ``import zbatch`` (and ``zbatch --help``)
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    FatalApiError,
    Interrupted,
    JobError,
    LockedError,
    QuotaReached,
    RunStopped,
    StoreError,
    ZbatchError,
)
from .job.settings import Job

if TYPE_CHECKING:
    from .api import Compacted as Compacted
    from .api import arun as arun
    from .api import compact as compact
    from .api import export as export
    from .api import failures as failures
    from .api import plan as plan
    from .api import read_results as read_results
    from .api import report as report
    from .api import review as review
    from .api import run as run
    from .api import status as status
    from .execution.plan import Plan as Plan
    from .execution.setup import RunResult as RunResult
    from .results.export import Exported as Exported
    from .results.failures import FailureGroup as FailureGroup
    from .results.quality import Report as Report
    from .results.status import Status as Status

__all__ = [
    "Compacted",
    "Exported",
    "FailureGroup",
    "FatalApiError",
    "Interrupted",
    "Job",
    "JobError",
    "LockedError",
    "Plan",
    "QuotaReached",
    "Report",
    "RunResult",
    "RunStopped",
    "Status",
    "StoreError",
    "ZbatchError",
    "__version__",
    "arun",
    "compact",
    "export",
    "failures",
    "plan",
    "read_results",
    "report",
    "review",
    "run",
    "status",
]


def __getattr__(name: str) -> Any:
    if name == "Report":  # with the report, not with the API (zbatch.results.quality)
        return importlib.import_module(".results.quality", __name__).Report
    if name in __all__:  # the API's names, imported on first use
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'zbatch' has no attribute {name!r}")
