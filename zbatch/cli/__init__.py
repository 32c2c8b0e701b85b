"""The command line (commands.py), its job-setting flags (options.py) and its tables (format.py).
The console script is ``zbatch.cli:main``."""

from .commands import cli, main
from .labelling import report, review

# `report` and `review` (the labelling loop) live in their own module, which builds on
# commands.py; they join the group here, so neither module imports the other back.
cli.add_command(report)
cli.add_command(review)

__all__ = ["cli", "main"]
