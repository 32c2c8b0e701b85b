"""The job: its settings (settings.py), the rules a valid job follows (rules.py), and job files and
flags (file.py). ``zbatch.job.Job`` is the public path."""

from .settings import DEFAULT_BASE_URL, DEFAULT_MODEL, Job

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "Job"]
