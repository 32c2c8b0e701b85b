"""The shape every way of running a job in one process shares (the online
:class:`~zbatch.online.runner.Runner`, :class:`~zbatch.batch.mode.BatchMode`): the work runs beside
its helpers (signals, the progress tick), the first reason to stop wins, and whatever the
work leaves behind is saved in a shielded close, however the run ends."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from .errors import Interrupted, ZbatchError
from .job.settings import Job
from .progress import Progress
from .stats import Stats

# How a part of a run stops it: the reason, and how long what is in flight may still take
# (None: as long as it needs; 0: cancelled at once, say because what it brings can't be saved).
Stop = Callable[[ZbatchError, "float | None"], None]


class Dispatcher:
    """One run's scaffolding. A subclass supplies ``_dispatch`` (the work), ``_close`` (what
    must happen however it ends) and ``_resume_hint`` (what a signal's message tells the user
    to do next); ``_interrupt_grace`` is how long the work may still take after a signal."""

    def __init__(
        self,
        job: Job,
        *,
        stats: Stats,
        progress: Progress,
        log: logging.Logger,
        handle_signals: bool,
    ) -> None:
        self.job = job
        self.stats = stats
        self.progress = progress
        self.log = log
        self._handle_signals = handle_signals
        self.stop_reason: ZbatchError | None = None
        # anyio primitives belong to the running loop; these are made in the run's own task.
        self._stop = anyio.Event()
        self._work_scope = anyio.CancelScope()

    async def run(self) -> ZbatchError | None:
        try:
            async with anyio.create_task_group() as helpers:
                if self._handle_signals:
                    helpers.start_soon(on_signals, self._on_signal)
                helpers.start_soon(self._tick)
                self._start_helpers(helpers)
                with self._work_scope:
                    try:
                        await self._dispatch()
                    except ZbatchError as exc:  # an API that refused, a part write that failed
                        self.stop(exc)
                helpers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
                self.progress.close(self.stats)
        self._ended()
        self.stats.end(self.stop_reason)
        return self.stop_reason

    async def _dispatch(self) -> None:
        raise NotImplementedError

    def _resume_hint(self) -> str:
        raise NotImplementedError

    async def _close(self) -> None:
        """Save what the work left behind; runs shielded, however the run ends."""

    def _start_helpers(self, helpers: TaskGroup) -> None:
        """Start the subclass's own helper tasks beside the work."""

    def _ended(self) -> None:
        """A last word on the stop reason, once everything is closed."""

    def _on_tick(self) -> None:
        """Refresh the figures the progress display shows."""

    # --- stopping -------------------------------------------------------------------------

    def stop(self, reason: ZbatchError, in_flight: float | None = None) -> None:
        """Stop dispatching; the first reason wins. What is in flight may take ``in_flight``
        seconds more (None: as long as it needs)."""
        if in_flight is not None:
            self._work_scope.deadline = min(
                self._work_scope.deadline, anyio.current_time() + in_flight
            )
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.log.warning("stopping: %s", reason, extra={"event": "stopped"})
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the run stops first; True if it is still running."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stop.wait()
        return not self.stopping

    @property
    def _interrupt_grace(self) -> float:
        return self.job.grace_seconds

    async def _on_signal(self, code: int, name: str) -> None:
        if isinstance(self.stop_reason, Interrupted):
            self.log.warning("second signal: exiting at once")
            os._exit(code)
        message = f"interrupted by {name}; {self._resume_hint()}"
        self.stop(Interrupted(message, exit_code=code), self._interrupt_grace)

    async def _tick(self) -> None:
        while True:
            self._on_tick()
            self.progress.refresh(self.stats)
            await anyio.sleep(self.progress.interval)


async def on_signals(handle: Callable[[int, str], Awaitable[None]]) -> None:
    """Call ``handle(exit code, signal name)`` on each SIGINT (130) / SIGTERM (143); only the
    main thread can receive them, elsewhere this returns at once."""
    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    except (NotImplementedError, ValueError):  # not the main thread
        return
    with receiver as signals:
        async for signum in signals:
            await handle(130 if signum == signal.SIGINT else 143, signal.Signals(signum).name)
