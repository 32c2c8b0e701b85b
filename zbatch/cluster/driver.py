"""A whole job on a Dask cluster: its shards as tasks, one in-flight cap across all of them.

    zbatch run job.toml --cluster local:4                 # a LocalCluster of 4 processes
    zbatch run job.toml --cluster dask://scheduler:8786   # an existing cluster

The driver (:func:`arun_on_cluster`) checks the job and settles OUTDIR/job.json once, splits
the rows into shards (two per worker thread, so a lost worker costs little) and submits one
task per shard. Each task (:func:`run_shard`) runs the online runner on its shard into the
shared OUTDIR, with its in-flight requests under a ``distributed.Semaphore`` named after the
job: ``concurrency`` is a cap for the whole cluster, with each process's adaptive limit
below it. ``rpm`` and ``tpm`` are split evenly across the tasks that can run at once, and a
second semaphore keeps that many running, so the sum stays within the caps. A task lost with
its worker is run again by Dask; like any resume, it sends only rows not yet committed.
Tasks report their figures on a Dask event topic, from which the driver draws one progress
display and writes one summary.json. A stop (Ctrl-C, or a fatal answer in one task) is a
Dask Event every task watches: each stops like on a signal and commits what completed.

Needs the ``dask`` extra; ``distributed`` is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio

from ..dispatch import on_signals
from ..errors import Interrupted, JobError, RunStopped, ZbatchError
from ..job.settings import Job
from ..progress import NullProgress, Progress
from ..shard import Shard
from ..source import count_rows
from ..stats import Stats
from ..store.state import RetryFailed
from .task import (
    Secret,
    ShardOutcome,
    add_figures,
    figures,
    run_shard,
)

if TYPE_CHECKING:
    from distributed import Client

    from ..execution.setup import RunResult

log = logging.getLogger("zbatch")

# Tasks per worker thread: a lost worker costs at most this share of the job's rows again
# in reading, and none in requests (committed rows are never sent again).
TASKS_PER_THREAD = 2

_ADDRESS = re.compile(
    r"(?P<scheme>dask|tcp|tls)://(?P<host>[^\s/:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where the tasks run: an existing scheduler's ``address``, or ``workers`` local
    processes (``address`` None)."""

    address: str | None
    workers: int

    def __str__(self) -> str:
        return self.address or f"local:{self.workers}"

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        """``local:N`` or ``dask://HOST:PORT`` (``tcp://`` and ``tls://`` as Dask spells them)."""
        kind, colon, rest = text.partition(":")
        if kind == "local" and colon:
            try:
                workers = int(rest)
            except ValueError:
                raise JobError(
                    f"--cluster local:N needs a whole number of worker processes, not {rest!r}"
                ) from None
            if workers < 1:
                raise JobError(f"--cluster local:N needs at least 1 worker process, not {workers}")
            return cls(None, workers)
        match = _ADDRESS.fullmatch(text)
        if match is None:
            raise JobError(f"--cluster: expected dask://HOST:PORT or local:N, not {text!r}")
        scheme = "tcp" if match["scheme"] == "dask" else match["scheme"]
        return cls(f"{scheme}://{match['host']}:{match['port']}", 0)


# --- the driver -----------------------------------------------------------------------------


async def arun_on_cluster(
    job: Job,
    cluster: str,
    *,
    api_key: str | None = None,
    progress: Progress | None = None,
    handle_signals: bool = False,
    retry_failed: RetryFailed = False,
    force: bool = False,
) -> RunResult:
    """Run (or resume) the whole job as shard tasks on a Dask cluster; see the module doc."""
    from ..execution.runlog import run_log
    from ..execution.setup import check_run, finish, open_session
    from ..ops.events import RunContext
    from ..ops.manifest import RunInfo

    spec = ClusterSpec.parse(cluster)
    _require_distributed()
    inputs, key = check_run(job, api_key, None)
    # job.json is written (and --force applied) once, here, before any task starts.
    with open_session(job, inputs, force=force, shard=None) as (session, _):
        outdir, notice, run_id = session.outdir, session.notice, session.prefix
    info = RunInfo.begin(
        run_id, shard=None, tag="", job_fingerprint=job.fingerprint(), paths=inputs.paths
    )
    view = _View(job, count_rows(inputs.paths))
    async with _connect(spec) as client:
        threads = await _worker_threads(client, spec)
        tasks = [
            Shard(index, TASKS_PER_THREAD * threads) for index in range(TASKS_PER_THREAD * threads)
        ]
        run = _Run(client, job, view, progress or NullProgress(), handle_signals)
        context = RunContext(run_id, "all", view.stats)
        with run_log(outdir, job.log_format, context) as runlog:
            if notice:
                runlog.warning(notice)
            runlog.info(
                "start on %s: %d shard tasks, %d worker threads, cluster-wide concurrency %d",
                spec,
                len(tasks),
                threads,
                job.concurrency,
                extra={"event": "started"},
            )
            rated = job.rpm is not None or job.tpm is not None
            stopped = await run.run(
                tasks,
                functools.partial(
                    run_shard,
                    _split_rates(job, threads),
                    api_key=None if key is None else Secret(key),
                    retry_failed=retry_failed,
                    task_slots=threads if rated else None,
                ),
            )
            also = {"cluster": {"tasks": len(tasks), "threads": threads}}
            stats = view.stats(stopped)
            return finish(
                outdir, runlog, stats, stopped, notice, summary=also, info=info, report=job.report
            )


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise JobError(
            '--cluster needs Dask: pip install "zbatch[dask]" (or "dask[distributed]")'
        ) from None


def _split_rates(job: Job, threads: int) -> Job:
    """The job as each task runs it: rpm and tpm split evenly across the tasks that can run
    at once (the concurrency cap is shared through the semaphore instead)."""
    return dataclasses.replace(
        job,
        rpm=None if job.rpm is None else job.rpm / threads,
        tpm=None if job.tpm is None else job.tpm / threads,
    )


@contextlib.asynccontextmanager
async def _connect(spec: ClusterSpec) -> AsyncIterator[Client]:
    from distributed import Client, LocalCluster

    if spec.address is None:
        import dask

        # A killed worker's leases stay taken until they time out (30 s by default), which
        # stalls every other task; on one machine nothing delays a refresh (every 2 s) that
        # long. The workers take the settings from the driver's config when they start.
        leases = {
            "distributed.scheduler.locks.lease-timeout": "10s",
            "distributed.scheduler.locks.lease-validation-interval": "1s",
        }
        with dask.config.set(leases):
            async with (
                LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,
                    processes=True,
                    asynchronous=True,
                    # The scheduler serves HTTP whatever this says; 8787 may be taken.
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                ) as cluster,
                Client(cluster, asynchronous=True) as client,
            ):
                yield client
        return
    from .probe import connect_seconds, probe_scheduler

    timeout = connect_seconds()
    host, _, port = spec.address.partition("://")[2].rpartition(":")
    if spec.address.startswith("tcp://"):  # TLS cannot be asked without its certificates
        await probe_scheduler(host, int(port), timeout=timeout, shown=spec.address)
    try:
        with anyio.fail_after(2 * timeout):
            client = await Client(spec.address, asynchronous=True, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise JobError(
            f"--cluster: no Dask scheduler answers at {spec.address} ({exc}); start one, or "
            "check the address"
        ) from None
    async with client:
        yield client


async def _worker_threads(client: Client, spec: ClusterSpec) -> int:
    """Threads across the cluster's workers, once it has any."""
    try:
        await client.wait_for_workers(max(1, spec.workers), timeout=120)  # type: ignore[func-returns-value, misc]
    except TimeoutError:
        raise JobError(f"--cluster: the Dask cluster at {spec} has no workers") from None
    threads: dict[str, int] = await client.nthreads()
    return max(1, sum(threads.values()))


class _View:
    """The job's figures, summed from the shards' latest reports."""

    def __init__(self, job: Job, total: int) -> None:
        self._job = job
        self._total = total
        self._started = time.monotonic()
        self.by_shard: dict[int, dict[str, Any]] = {}

    def report(self, event: tuple[float, dict[str, Any]]) -> None:
        figures_ = dict(event[1])
        self.by_shard[int(figures_.pop("shard"))] = figures_

    def stats(self, stopped: ZbatchError | None = None) -> Stats:
        stats = Stats(price=self._job.price)
        stats.started = self._started
        stats.total = self._total
        stats.concurrency = stats.concurrency_min = self._job.concurrency
        for shard_figures in self.by_shard.values():
            add_figures(stats, shard_figures)
        stats.end(stopped)
        return stats


class _Run:
    """Submits the shard tasks, follows them, and stops them when asked."""

    def __init__(
        self, client: Client, job: Job, view: _View, progress: Progress, handle_signals: bool
    ) -> None:
        self._client = client
        self._job = job
        self._view = view
        self._progress = progress
        self._handle_signals = handle_signals
        self._id = uuid.uuid4().hex[:12]
        self.reason: ZbatchError | None = None

    async def run(
        self, tasks: list[Shard], task: Callable[..., ShardOutcome]
    ) -> ZbatchError | None:
        from distributed import Event, as_completed

        topic = f"zbatch-progress-{self._id}"
        self._stop = Event(f"zbatch-stop-{self._id}", client=self._client)
        self._client.subscribe_topic(topic, self._view.report)
        futures = [
            self._client.submit(
                task,
                shard,
                progress_topic=topic,
                stop_event=self._stop.name,
                key=f"zbatch-{shard.tag}-{self._id}",
                pure=False,
            )
            for shard in tasks
        ]
        try:
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(self._show_progress)
                if self._handle_signals:
                    helpers.start_soon(on_signals, functools.partial(self._on_signal, futures))
                async for _, outcome in as_completed(
                    futures, with_results=True, raise_errors=False
                ):
                    await self._settle(outcome)
                helpers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_tasks(futures)
                self._client.unsubscribe_topic(topic)
                self._progress.close(self._view.stats(self.reason))
        return self.reason

    async def _settle(self, outcome: object) -> None:
        """Take in a finished task; a task's fatal stop or failure stops the others too."""
        if isinstance(outcome, ShardOutcome):
            self._view.by_shard[outcome.shard.index] = figures(outcome.stats)
            stopped = outcome.stopped
            if stopped is not None and not isinstance(stopped, Interrupted):
                await self.stop(stopped)
        elif isinstance(outcome, ZbatchError):
            await self.stop(outcome)
        elif isinstance(outcome, BaseException):
            await self.stop(
                RunStopped(f"a shard task failed: {outcome!r}; run the same command to resume")
            )

    async def stop(self, reason: ZbatchError) -> None:
        """Ask every task to stop (they commit what completed); the first reason wins."""
        if self.reason is None:
            self.reason = reason
            log.warning("stopping: %s", reason)
        await self._stop.set()

    async def _stop_tasks(self, futures: list[Any]) -> None:
        """On the way out (cancelled, or a second signal): tasks still running are asked to
        stop and given their grace period, then cancelled."""
        from distributed import wait

        if all(future.done() for future in futures):
            return
        await self._stop.set()
        with anyio.move_on_after(self._job.grace_seconds + 30):
            await wait(futures)
        await self._client.cancel(futures)

    async def _show_progress(self) -> None:
        while True:
            self._progress.refresh(self._view.stats())
            await anyio.sleep(self._progress.interval)

    async def _on_signal(self, futures: list[Any], code: int, name: str) -> None:
        if isinstance(self.reason, Interrupted):
            log.warning("second signal: cancelling the tasks")
            await self._client.cancel(futures)
            raise Interrupted(self.reason.args[0], exit_code=code)
        message = f"interrupted by {name}; run the same command to resume"
        await self.stop(Interrupted(message, exit_code=code))
