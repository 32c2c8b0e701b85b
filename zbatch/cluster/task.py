"""One shard of a job as a Dask task: what runs inside a worker (the driver is driver.py).

    from zbatch.cluster.task import run_shard
    outcome = run_shard(job, "3/8")   # in a task of your own Dask graph

Inside a worker the shard's requests share the job's cluster-wide in-flight cap
(``concurrency``); its figures go to the driver on a Dask event topic, and a
``distributed.Event`` is how the driver stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .. import errors
from ..errors import Interrupted, RunStopped, ZbatchError
from ..execution.options import RunOptions, shard_of
from ..execution.setup import execute
from ..job.settings import Job
from ..shard import Shard
from ..stats import Stats
from ..store.state import RetryFailed

STOP_POLL_SECONDS = 0.5
# Figures of a task's Stats that do not add up across tasks: the driver sets its own.
_NOT_SUMMED = frozenset({"total", "concurrency", "exit_code"})
# The USD figures that add up across shards (spent is the OUTDIR's, the same for all).
_SUMMED_USD = frozenset({"hedged_usd", "worst_charged_usd"})
# ... and the lowest concurrency any task's adaptive limit fell to.
_LOWEST = "concurrency_min"


@dataclasses.dataclass(frozen=True)
class ShardOutcome:
    """What a shard task returns: its figures and why it stopped (an exception would not
    survive the trip back from the worker)."""

    shard: Shard
    stats: Stats
    stop_type: str | None = None
    stop_message: str = ""
    exit_code: int = 0

    @classmethod
    def of(
        cls, shard: Shard, stats: Stats, stopped: ZbatchError | None, exit_code: int
    ) -> ShardOutcome:
        if stopped is None:
            return cls(shard, stats, exit_code=exit_code)
        return cls(shard, stats, type(stopped).__name__, str(stopped), exit_code)

    @property
    def stopped(self) -> ZbatchError | None:
        """The stop reason, rebuilt as the zbatch error it was."""
        if self.stop_type is None:
            return None
        if self.stop_type == Interrupted.__name__:
            return Interrupted(self.stop_message, exit_code=self.exit_code)
        kind = getattr(errors, self.stop_type, None)
        if isinstance(kind, type) and issubclass(kind, ZbatchError):
            with contextlib.suppress(TypeError):
                return kind(self.stop_message)
        error = RunStopped(self.stop_message)
        error.exit_code = self.exit_code
        return error


def semaphore_name(job: Job) -> str:
    """The cluster-wide cap of a job: every task of the job (and of a rerun with the same
    concurrency) shares it."""
    return f"zbatch-{job.fingerprint()[:16]}-c{job.concurrency}"


def run_shard(
    job: Job,
    shard: Shard | str,
    options: RunOptions | None = None,
    *,
    api_key: str | None = None,
    retry_failed: RetryFailed = False,
    progress_topic: str | None = None,
    stop_event: str | None = None,
    task_slots: int | None = None,
) -> ShardOutcome:
    """Run one shard of a job into its OUTDIR; made to be a task in a Dask graph.

    ``options`` says how (a :class:`~zbatch.execution.options.RunOptions`, whose ``api_key``
    never shows in the task's repr); ``api_key`` and ``retry_failed`` are shorthands for the
    two a task of your own graph most often sets. Inside a Dask worker its requests share the
    job's cluster-wide in-flight cap (``concurrency``) with every other shard of the job.
    ``progress_topic``, ``stop_event`` and ``task_slots`` are how ``--cluster``'s driver
    follows, stops and spaces its tasks. Without a driver, each shard writes summary.json
    when it ends."""
    if options is None:
        options = RunOptions(api_key=api_key, retry_failed=retry_failed)
    elif api_key is not None or retry_failed:
        raise TypeError("run_shard: pass api_key and retry_failed inside options, not beside")
    options = dataclasses.replace(options, shard=shard_of(shard))
    call = functools.partial(
        _run_shard,
        job,
        options,
        progress_topic=progress_topic,
        stop_event=stop_event,
        task_slots=task_slots,
    )
    result: ShardOutcome = anyio.run(call)
    return result


async def _run_shard(
    job: Job,
    options: RunOptions,
    *,
    progress_topic: str | None,
    stop_event: str | None,
    task_slots: int | None,
) -> ShardOutcome:
    shard = options.shard
    assert shard is not None
    worker = _current_worker()
    if worker is None:  # not in a Dask task: a plain shard run
        result = await execute(job, options)
        return ShardOutcome.of(shard, result.stats, result.stopped, result.exit_code)

    from .limit import ClusterLease, ClusterLimit

    stop = None if stop_event is None else _DriverStop(stop_event, worker.loop.asyncio_loop)
    async with contextlib.AsyncExitStack() as stack:
        if task_slots is not None:
            slots = await ClusterLease.open(f"{semaphore_name(job)}-tasks{task_slots}", task_slots)
            await slots.acquire()
            stack.callback(slots.release)
        if stop is not None and await stop.is_set():  # stopped while this task was queued
            stats = Stats(outcome="not started: the run was stopped")
            stats.concurrency = stats.concurrency_min = job.concurrency
            return ShardOutcome.of(shard, stats, None, 0)
        in_flight = ClusterLimit(
            job.concurrency, await ClusterLease.open(semaphore_name(job), job.concurrency)
        )
        stack.callback(in_flight.close)
        in_task = dataclasses.replace(
            options,
            in_flight=in_flight,
            stop_when=None if stop is None else stop.wait,
            write_summary=progress_topic is None,
        )
        if progress_topic is not None:
            in_task = dataclasses.replace(
                in_task, progress=_TopicProgress(worker, progress_topic, shard)
            )
        result = await execute(job, in_task)
    return ShardOutcome.of(shard, result.stats, result.stopped, result.exit_code)


def _current_worker() -> Any:
    """The Dask worker running this task, or None (no Dask, or not in a task)."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None


class _DriverStop:
    """The driver's stop request: a ``distributed.Event``, asked from the task's loop."""

    def __init__(self, name: str, dask_loop: asyncio.AbstractEventLoop) -> None:
        from distributed import Event

        self._event = Event(name)
        self._loop = dask_loop

    async def _ask(self, make: Callable[[], Awaitable[bool]]) -> bool:
        from .limit import on_loop

        return await asyncio.wrap_future(on_loop(self._loop, make))

    async def is_set(self) -> bool:
        return await self._ask(self._event.is_set)

    async def wait(self) -> ZbatchError:
        """Return once the driver asks to stop (each ask waits on the scheduler a while)."""
        while not await self._ask(functools.partial(self._event.wait, STOP_POLL_SECONDS)):
            pass
        return Interrupted("stopped by the cluster run's driver", exit_code=130)


class _TopicProgress:
    """A task's progress, sent to the driver as Dask events (a few a second at most)."""

    interval = 1.0

    def __init__(self, worker: Any, topic: str, shard: Shard) -> None:
        self._worker = worker
        self._topic = topic
        self._shard = shard

    def refresh(self, stats: Stats) -> None:
        self._worker.log_event(self._topic, {"shard": self._shard.index, **figures(stats)})

    def close(self, stats: Stats) -> None:
        self.refresh(stats)


def figures(stats: Stats) -> dict[str, Any]:
    """The figures of ``stats`` that add up across shards, as plain numbers and dicts."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.name in _NOT_SUMMED:
            continue
        if isinstance(value, Counter):
            out[field.name] = dict(value)
        elif field.name in _SUMMED_USD or (isinstance(value, int) and not isinstance(value, bool)):
            out[field.name] = value
    return out


def add_figures(total: Stats, figures: dict[str, Any]) -> None:
    """Add one shard's :func:`figures` into ``total``."""
    for name, value in figures.items():
        if not hasattr(total, name):
            continue
        if name == _LOWEST:
            total.concurrency_min = min(total.concurrency_min, value)
        elif isinstance(value, dict):
            getattr(total, name).update(value)
        else:
            setattr(total, name, getattr(total, name) + value)
