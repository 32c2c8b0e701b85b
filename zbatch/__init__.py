"""zbatch: run tables of prompts through the Z.AI chat completions API, resumably.

from zbatch import load_job, run_job
result = run_job(load_job("jobs/sentiment.toml", {"simulate": True}))
result.exit_code, result.stats.ok
"""

from __future__ import annotations

from .errors import ZbatchError
from .job import Job, load_job
from .runner import RunResult, run_job

__all__ = ["Job", "RunResult", "ZbatchError", "load_job", "run_job"]
