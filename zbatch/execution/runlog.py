"""OUTDIR/run.log: a run's events, whatever the caller's logging configuration.

Each run logs through a private logger of its own, at INFO, into run.log. Its records are
then handed to the public ``zbatch`` logger only when that logger is enabled for them, so a
caller's own logging setup is honoured and never changed (and two runs in one interpreter
do not pile up handlers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ..ops.events import formatter
from ..stats import Stats
from ..store import OutputDir

PUBLIC = logging.getLogger("zbatch")


class _Forward(logging.Handler):
    """Passes a record on to the public logger, if it is enabled for the record's level."""

    def emit(self, record: logging.LogRecord) -> None:
        if PUBLIC.isEnabledFor(record.levelno):
            PUBLIC.handle(record)


def log_end(log: logging.Logger, stats: Stats, exit_code: int, where: str = "") -> None:
    """The run's last line: how it ended and its figures."""
    log.info(
        "end%s: %s, ok %d, failed %d, skipped %d, requests %d, exit %d",
        where,
        stats.outcome,
        stats.ok,
        stats.failed,
        stats.skipped,
        stats.requests,
        exit_code,
        extra={"event": "finished"},
    )


@contextlib.contextmanager
def run_log(
    outdir: OutputDir, log_format: str = "plain", context: logging.Filter | None = None
) -> Iterator[logging.Logger]:
    """A logger for one run: into OUTDIR/run.log (plain or JSON lines), and on to the
    ``zbatch`` logger; ``context`` (an :class:`~zbatch.ops.events.RunContext`) adds the
    run's id, shard and figures to each record."""
    log = logging.Logger("zbatch", logging.INFO)  # not registered: the run's own
    if context is not None:
        log.addFilter(context)
    file = outdir.run_log_handler()
    file.setFormatter(formatter(log_format))
    log.addHandler(file)
    log.addHandler(_Forward())
    try:
        yield log
    finally:
        log.removeHandler(file)
        file.close()
