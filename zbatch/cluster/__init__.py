"""A job on a Dask cluster: the driver (driver.py), one shard as a task (task.py), the cluster-wide
in-flight cap (limit.py).

``zbatch.cluster.run_shard`` is public: submit it as a task of your own Dask graph.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so that importing zbatch.cluster.limit does not import the task module.
    if name == "run_shard":
        from .task import run_shard

        return run_shard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
