"""What a scheduler's monitoring sees of one run (``zbatch.api.arun``): the pings at its
start and end, and its metrics during the run and at the end."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from ..errors import ZbatchError
from ..job import Job
from ..progress import Progress
from ..shard import Shard
from ..stats import Stats
from ..store import OutputDir
from ..store.outdir import shard_tag
from .manifest import last_success

if TYPE_CHECKING:
    from .metrics import Exporter
    from .pings import Pinger


def job_name(job: Job) -> str:
    """The name a job's metrics carry: its OUTDIR's last path component."""
    return PurePosixPath(job.output_dir.rstrip("/")).name or "zbatch"


class Watched:
    """A progress display that also hands the figures to the metrics on each tick."""

    def __init__(self, inner: Progress, exporter: Exporter) -> None:
        self.inner = inner
        self.exporter = exporter
        self.interval = min(inner.interval, exporter.every)

    def refresh(self, stats: Stats) -> None:
        self.inner.refresh(stats)
        self.exporter.tick(stats)

    def close(self, stats: Stats) -> None:
        self.inner.close(stats)
        self.exporter.stats = stats


class Watch:
    """Pings and metrics around one run: :meth:`begin` at its start, :meth:`end` with its
    exit code (a stop by an error included)."""

    def __init__(self, job: Job, shard: Shard | None) -> None:
        self.pinger: Pinger | None = None
        self.exporter: Exporter | None = None
        if job.ping is not None:
            from .pings import Pinger

            self.pinger = Pinger(job.ping)
        if job.metrics_file is not None or job.pushgateway is not None:
            from .metrics import Exporter, require_client

            require_client()
            self.job = job
            self.tag = shard_tag(None if shard is None else (shard.index, shard.count))
            self.exporter = Exporter(
                textfile=job.metrics_file,
                pushgateway=job.pushgateway,
                job_name=job_name(job),
                shard="all" if shard is None else str(shard.index),
                every=job.metrics_every,
                last_success=_last_success(job, self.tag),
            )

    @classmethod
    def wanted(cls, job: Job) -> bool:
        return job.ping is not None or job.metrics_file is not None or job.pushgateway is not None

    def progress(self, progress: Progress) -> Progress:
        return progress if self.exporter is None else Watched(progress, self.exporter)

    def begin(self, progress: Progress | None) -> Progress:
        """The start ping, and the metrics thread; the progress display the run should use."""
        from ..progress import NullProgress

        if self.pinger is not None:
            self.pinger.start()
        if self.exporter is not None:
            self.exporter.start()
        return self.progress(progress or NullProgress())

    async def end(self, exit_code: int, stats: Stats | None) -> None:
        """The last metrics and the end ping, off the event loop (bounded: see pings.py)."""
        import anyio

        await anyio.to_thread.run_sync(self._end, exit_code, stats)

    def _end(self, exit_code: int, stats: Stats | None) -> None:
        if self.exporter is not None:
            succeeded = _last_success(self.job, self.tag) if exit_code == 0 else None
            self.exporter.finish(exit_code, stats, succeeded)
        if self.pinger is not None:
            self.pinger.end(exit_code)


def _last_success(job: Job, tag: str) -> float | None:
    try:
        outdir = OutputDir(job.output_dir)
    except ZbatchError:  # a URL the run itself will refuse, with its own message
        return None
    return last_success(outdir, tag)
