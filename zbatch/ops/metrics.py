"""Prometheus metrics of a run: a node_exporter textfile (``--metrics-file``) and a
Pushgateway (``--pushgateway``), written during the run and at its end.

The figures are the run's :class:`~zbatch.stats.Stats` (the same the progress line and
summary.json show), read on the progress tick: a :class:`Snapshot` is taken every
``metrics_every`` seconds on the event loop and handed to one writer thread, which renders it
with prometheus-client and writes the file (temp file, then rename) and pushes it. Nothing
is added on the request path. prometheus-client (``zbatch[metrics]``) is imported only by a
run that asks for metrics.

Every sample is labelled ``zbatch_job`` (the OUTDIR's name) and ``shard`` (K of a ``--shard
K/N`` run, else "all"); a push goes to ``/metrics/job/<zbatch_job>/shard/<shard>``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import JobError, redact
from ..stats import LATENCY_BUCKETS, Stats
from .secrets import shown_url

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("zbatch")
# A push waits at most this long for the Pushgateway; the last one is tried this often.
PUSH_TIMEOUT = 2.0
LAST_PUSH_ATTEMPTS = 2
LAST_PUSH_PAUSE = 0.5


def require_client() -> None:
    """JobError (exit 2, before anything is sent) when prometheus-client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise JobError(
            'run.metrics_file and run.pushgateway need prometheus-client: pip install "zbatch'
            '[metrics]"'
        ) from None


@dataclass(frozen=True)
class Snapshot:
    """The run's figures at one moment, copied so a thread can render them."""

    rows: Mapping[str, int]
    row_errors: Mapping[str, int]
    input_rows: int | None
    pending: int
    responses: Mapping[str, int]
    rate_limited: int
    retries: Mapping[str, int]
    in_flight: int
    concurrency: int
    tokens: Mapping[str, int]
    cost: float | None
    spent: float | None
    budget: float | None
    latency: tuple[int, ...]
    latency_sum: float
    cache_hits: int
    duration: float
    started_at: float
    last_success: float | None
    exit_code: int | None = None  # set once the run has ended

    @classmethod
    def of(
        cls,
        stats: Stats,
        *,
        started_at: float,
        last_success: float | None,
        exit_code: int | None = None,
    ) -> Snapshot:
        return cls(
            rows={"ok": stats.ok, "failed": stats.failed, "skipped": stats.skipped},
            row_errors=dict(stats.errors),
            input_rows=stats.total,
            pending=stats.pending,
            responses=dict(stats.responses),
            rate_limited=stats.rate_limited,
            retries=dict(stats.retries),
            in_flight=stats.in_flight,
            concurrency=stats.concurrency,
            tokens={
                "prompt": stats.prompt_tokens,
                "completion": stats.completion_tokens,
                "cached": stats.cached_tokens,
            },
            cost=stats.cost,
            spent=stats.spent,
            budget=stats.max_cost,
            latency=tuple(stats.latency.counts),
            latency_sum=stats.latency.total_seconds,
            cache_hits=stats.cache_hits,
            duration=stats.elapsed,
            started_at=started_at,
            last_success=last_success,
            exit_code=exit_code,
        )


class _Families:
    """The metric families of one snapshot, every sample with the run's labels."""

    def __init__(self, snapshot: Snapshot, labels: Mapping[str, str]) -> None:
        self.snapshot = snapshot
        self.names = list(labels)
        self.values = list(labels.values())

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        s, names, values = self.snapshot, self.names, self.values
        info = InfoMetricFamily("zbatch_build", "zbatch's version.", labels=names)
        info.add_metric(values, {"version": __version__})
        yield info
        # name, help, the label that tells the figures apart (None: one figure), figures
        counters: list[tuple[str, str, str | None, Mapping[str, float]]] = [
            ("zbatch_rows", "Rows settled by this run, by outcome.", "outcome", s.rows),
            ("zbatch_row_errors", "Rows failed this run, by type.", "error_type", s.row_errors),
            ("zbatch_rate_limited", "Requests rejected for rate (429, 1302).", None,
             {"": s.rate_limited}),
            ("zbatch_retries", "Retries, by cause.", "error_type", s.retries),
            ("zbatch_tokens", "Tokens billed this run, by kind.", "kind", s.tokens),
            ("zbatch_cost_usd", "Estimated cost of this run in USD.", None, {"": s.cost or 0.0}),
            ("zbatch_cache_hits", "Rows answered from the response cache.", None,
             {"": s.cache_hits}),
        ]  # fmt: skip
        for name, doc, label, figures in counters:
            counter = CounterMetricFamily(name, doc, labels=[*names, *([label] if label else [])])
            for key, figure in sorted(figures.items()):
                counter.add_metric([*values, *([key] if label else [])], figure)
            yield counter
        requests = CounterMetricFamily(
            "zbatch_requests",
            "Answers to requests by HTTP status and provider business code "
            '(status "none": no HTTP answer: timeout, connection).',
            labels=[*names, "status", "code"],
        )
        for key, count in sorted(s.responses.items()):
            status, _, code = key.partition("/")
            requests.add_metric([*values, status, code], count)
        yield requests
        gauges: list[tuple[str, str, float | None]] = [
            ("zbatch_input_rows", "Rows in the input (of this shard).", s.input_rows),
            ("zbatch_rows_pending", "Rows of the input not yet settled.", s.pending),
            ("zbatch_in_flight_requests", "Requests in flight now.", s.in_flight),
            ("zbatch_concurrency_limit", "The adaptive in-flight limit.", s.concurrency),
            ("zbatch_spent_usd", "What the OUTDIR has cost, all runs together.", s.spent),
            ("zbatch_budget_usd", "The OUTDIR's budget (limits.max_cost).", s.budget),
            ("zbatch_run_duration_seconds", "How long the run has taken.", s.duration),
            ("zbatch_run_start_timestamp_seconds", "When the run started.", s.started_at),
            ("zbatch_running", "1 while the run goes on, 0 once it ended.",
             1 if s.exit_code is None else 0),
            ("zbatch_exit_code", "The run's exit code (README: Exit codes).", s.exit_code),
            ("zbatch_last_success_timestamp_seconds",
             "When this job (or shard) last ended with exit 0.", s.last_success),
        ]  # fmt: skip
        for name, doc, reading in gauges:
            if reading is not None:  # unknown: no sample rather than a made-up one
                gauge = GaugeMetricFamily(name, doc, labels=names)
                gauge.add_metric(values, reading)
                yield gauge
        cumulative, buckets = 0, []
        for bound, count in zip([*LATENCY_BUCKETS, float("inf")], s.latency, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        latency = HistogramMetricFamily(
            "zbatch_request_duration_seconds", "Latency of answered requests.", labels=names
        )
        latency.add_metric(values, buckets, s.latency_sum)
        yield latency


class Exporter:
    """Writes and pushes a run's metrics: every ``every`` seconds from a thread, and once
    more, synchronously, at the end."""

    def __init__(
        self,
        *,
        textfile: str | None,
        pushgateway: str | None,
        job_name: str,
        shard: str,
        every: float,
        last_success: float | None,
    ) -> None:
        self.textfile = textfile
        self.pushgateway = pushgateway
        self.job_name = job_name
        self.shard = shard
        self.every = every
        self.started_at = time.time()
        self.last_success = last_success
        self.stats = Stats()  # the figures of the last tick, until the run has its own
        self._due = 0.0
        self._queue: queue.Queue[Snapshot | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._drain, name="zbatch-metrics", daemon=True)
        self._warned: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def tick(self, stats: Stats) -> None:
        """On the progress tick: hand a snapshot to the writer thread when one is due."""
        self.stats = stats
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.every
        snapshot = self.snapshot(stats)
        try:
            self._queue.put_nowait(snapshot)
        except queue.Full:  # the thread is still busy with the last one: this one replaces it
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._queue.put_nowait(snapshot)

    def snapshot(self, stats: Stats, exit_code: int | None = None) -> Snapshot:
        return Snapshot.of(
            stats, started_at=self.started_at, last_success=self.last_success, exit_code=exit_code
        )

    def finish(self, exit_code: int, stats: Stats | None, last_success: float | None) -> None:
        """The last write and push, with the exit code and the last success as the run's
        manifest now says (blocking: bounded by the push's attempts and timeout)."""
        if exit_code == 0:
            self.last_success = last_success or time.time()
        self._queue.put(None)  # after the snapshot in the queue, if any
        self._thread.join(PUSH_TIMEOUT + 1)
        self._export(self.snapshot(stats or self.stats, exit_code), LAST_PUSH_ATTEMPTS)

    def registry(self, snapshot: Snapshot) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=False)
        labels = {"zbatch_job": self.job_name, "shard": self.shard}
        registry.register(_Families(snapshot, labels))
        return registry

    def _drain(self) -> None:
        while (snapshot := self._queue.get()) is not None:
            self._export(snapshot, 1)

    def _export(self, snapshot: Snapshot, attempts: int) -> None:
        registry = self.registry(snapshot)
        if self.textfile is not None:
            from prometheus_client import write_to_textfile

            try:
                write_to_textfile(self.textfile, registry)
            except OSError as exc:
                self._warn("textfile", f"metrics file {self.textfile} not written: {exc}")
        if self.pushgateway is not None:
            self._push(self.pushgateway, registry, attempts)

    def _push(self, url: str, registry: CollectorRegistry, attempts: int) -> None:
        from prometheus_client import push_to_gateway

        for attempt in range(attempts):
            try:
                push_to_gateway(
                    url,
                    job=self.job_name,
                    registry=registry,
                    grouping_key={"shard": self.shard},
                    timeout=PUSH_TIMEOUT,
                )
                return
            except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
                problem = redact(f"{type(exc).__name__}: {exc}", url)
            if attempt + 1 < attempts:
                time.sleep(LAST_PUSH_PAUSE)
        self._warn("push", f"metrics push to {shown_url(url)} failed ({problem}); the run goes on")

    def _warn(self, kind: str, message: str) -> None:
        """Say a kind of failure once a run: a dead Pushgateway is not worth a line a tick."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, extra={"event": "metrics_failed"})
