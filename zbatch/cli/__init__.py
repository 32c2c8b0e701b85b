"""The command line (commands.py), its job-setting flags (options.py) and its tables (format.py).
The console script is ``zbatch.cli:main``."""

from .commands import cli, main

__all__ = ["cli", "main"]
