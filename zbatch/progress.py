"""Showing progress: a tqdm bar on a terminal, a plain line every N seconds off one.

The runner never calls these per row: a ticker calls ``refresh(stats)`` a few
times a second, so progress costs nothing on the request hot path.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

from .stats import Stats

log = logging.getLogger("zbatch")


class Progress(Protocol):
    """What the runner needs from a progress display."""

    interval: float

    def refresh(self, stats: Stats) -> None: ...

    def close(self, stats: Stats) -> None: ...


class NullProgress:
    """Shows nothing (--quiet, tests)."""

    interval = 1.0

    def refresh(self, stats: Stats) -> None:
        pass

    def close(self, stats: Stats) -> None:
        pass


class BarProgress:
    """A tqdm bar: rows done/total, rate, ok/failed, tokens, concurrency. On stderr on a
    terminal; with ``notebook``, tqdm.auto's bar in the cell's output (a widget where
    ipywidgets is installed, text otherwise)."""

    interval = 0.25

    def __init__(self, *, notebook: bool = False) -> None:
        # Only a run that shows a bar imports tqdm: others start without it.
        if notebook:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=None, unit="row")
        else:
            from tqdm import tqdm as plain

            self._bar = plain(total=None, unit="row", dynamic_ncols=True, file=sys.stderr)

    def refresh(self, stats: Stats) -> None:
        bar = self._bar
        if stats.total is not None and bar.total != stats.total:
            bar.total = stats.total
        bar.n = stats.settled
        bar.initial = stats.skipped  # rate and ETA count only the rows this run settles
        figures: dict[str, object] = {"ok": stats.ok, "failed": stats.failed}
        figures["tok"] = stats.prompt_tokens + stats.completion_tokens
        if stats.cost is not None:
            figures["cost"] = f"${stats.cost:.4f}"
        figures["conc"] = stats.concurrency
        bar.set_postfix(figures, refresh=False)
        bar.refresh()

    def close(self, stats: Stats) -> None:
        self.refresh(stats)
        self._bar.close()


class LogProgress:
    """A plain log line every ``every`` seconds: no redraws, made for cron and CI logs."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._last = time.monotonic()
        self.interval = min(1.0, every / 2)  # a 1 s tick would stretch a shorter --log-every

    def refresh(self, stats: Stats) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._line(stats)

    def close(self, stats: Stats) -> None:
        self._line(stats)

    def _line(self, stats: Stats) -> None:
        from .ops.events import figures  # --log-format json shows these figures as fields

        log.info(stats.line(), extra={"event": "progress", "run": figures(stats)})


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell), not in a terminal IPython."""
    if "IPython" not in sys.modules:  # never imported: not in IPython at all
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def default(progress: Progress | None) -> Progress:
    """The library's display when the caller passes none: a bar in a Jupyter notebook,
    nothing elsewhere (a script or a worker shows what it chooses through ``progress=``)."""
    if progress is not None:
        return progress
    return BarProgress(notebook=True) if in_notebook() else NullProgress()


def choose(*, quiet: bool, log_every: float) -> Progress:
    """A bar on a terminal, log lines off one, nothing when quiet."""
    if quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return BarProgress()
    return LogProgress(log_every)
