"""A whole job on a Dask cluster: its shards as tasks, one in-flight cap across all of them.

    zbatch run job.toml --cluster local:4                 # a LocalCluster of 4 processes
    zbatch run job.toml --cluster dask://scheduler:8786   # an existing cluster

Needs the ``dask`` extra; ``distributed`` is imported only when a cluster is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import JobError

_ADDRESS = re.compile(
    r"(?P<scheme>dask|tcp|tls)://(?P<host>[^\s/:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)"
)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where the tasks run: an existing scheduler's ``address``, or ``workers`` local
    processes (``address`` None)."""

    address: str | None
    workers: int

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


class Secret:
    """The API key on its way to the workers: Dask prints a failed task's arguments in its
    logs, so the repr never shows the value."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret(***)"
