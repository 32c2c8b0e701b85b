"""``--log-format json``: each event a JSON object on one line, on stderr and in run.log.

    {"ts": "2026-12-07T13:40:02.118Z", "level": "info", "event": "started", "message": "...",
     "run_id": "20261207T134002.117-3fa1", "shard": "all",
     "rows": {"ok": 0, "failed": 0, "skipped": 0}, "requests": 0, "cost_usd": 0.0, ...}

A log call names its event with ``extra={"event": "started"}``; the few events a run has
(started, input_read, limit_changed, paused_for_quota, stopped, finished, progress) are
named so, any other line is a "message". :class:`RunContext` adds the run's id, shard and
figures to every record of a run's logger.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from ..stats import Stats


def figures(stats: Stats) -> dict[str, Any]:
    """The counts and spend every event carries."""
    cost = stats.cost
    return {
        "rows": {"ok": stats.ok, "failed": stats.failed, "skipped": stats.skipped},
        "requests": stats.requests,
        "cost_usd": None if cost is None else round(cost, 6),
        "spent_usd_all_runs": None if stats.spent is None else round(stats.spent, 6),
        "concurrency": stats.concurrency,
    }


class RunContext(logging.Filter):
    """Adds the run id, shard and the run's figures to each record of a run's logger."""

    def __init__(self, run_id: str, shard: str, stats: Callable[[], Stats]) -> None:
        super().__init__()
        self.run_id = run_id
        self.shard = shard
        self.stats = stats

    def filter(self, record: logging.LogRecord) -> bool:
        record.run = {"run_id": self.run_id, "shard": self.shard, **figures(self.stats())}
        return True


class JsonLines(logging.Formatter):
    """One JSON object a record: time (UTC), level, event, message, then the run's fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        event: dict[str, Any] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
        }
        event.update(getattr(record, "run", None) or {})
        return json.dumps(event, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``log_format``: "json", or the plain lines zbatch always wrote."""
    if log_format == "json":
        return JsonLines()
    return logging.Formatter("%(asctime)s %(levelname)s %(message)s")
