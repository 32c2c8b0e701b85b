"""How a run is asked for: everything about one run that is not the job itself, in one value.

    options = RunOptions(max_rows=100, handle_signals=True)
    result = await execute(job, options)

:func:`zbatch.arun` keeps its keywords and builds one :class:`RunOptions`; from there it goes
down whole (to the setup, the cluster driver, a shard task, each way of dispatching), so the
keyword list is written once, here. The job says *what* to send; the options say *how this
run* sends it: which key, which transport, how many rows, which shard, whether to wait.

A leaf beside the dispatchers: :mod:`zbatch.online`, :mod:`zbatch.batch` and the cluster read
it, and it imports nothing of theirs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..progress import NullProgress, Progress
from ..shard import Shard
from ..store.state import RetryFailed

if TYPE_CHECKING:
    import httpx

    from ..errors import ZbatchError
    from ..limits import AdaptiveLimit


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How one run is asked for; every field has the default a plain ``zbatch.run(job)`` uses.

    - ``api_key``: used, never stored or shown (left out of the repr, so a traceback or a
      Dask log of a task's arguments never holds it); None: the environment variable the job
      names.
    - ``progress``: the display the run refreshes (a null one shows nothing).
    - ``handle_signals``: SIGINT / SIGTERM stop the run (the CLI); a library caller keeps its
      own handlers.
    - ``transport``: replaces the HTTP transport (tests pass ``httpx.MockTransport``).
    - ``retry_failed``: send again the ids that failed (True) or those of these error types.
    - ``force``: start a new generation when the request changed.
    - ``max_rows``: send only the first that many pending rows (a paid sample; the next run
      goes on with the rest). The public keyword is ``limit``.
    - ``shard``: run only this shard's rows (:func:`shard_of` reads "K/N" and "auto/N").
    - ``wait``: batch mode; False returns once the rows are submitted.

    What a cluster's shard task sets (a caller of ``arun`` leaves them):

    - ``in_flight``: a cluster-wide in-flight cap instead of the run's own adaptive limit.
    - ``stop_when``: returns when the driver asks the run to stop; it then stops as on a
      signal.
    - ``write_summary``: False when the driver writes the one summary.json.
    """

    api_key: str | None = dataclasses.field(default=None, repr=False)
    progress: Progress = dataclasses.field(default_factory=NullProgress)
    handle_signals: bool = False
    transport: httpx.AsyncBaseTransport | None = None
    retry_failed: RetryFailed = False
    force: bool = False
    max_rows: int | None = None
    shard: Shard | None = None
    wait: bool = True
    in_flight: AdaptiveLimit | None = None
    stop_when: Callable[[], Awaitable[ZbatchError]] | None = None
    write_summary: bool = True

    def key(self, env_name: str) -> str | None:
        """The API key this run uses: the one given, else the environment variable
        ``env_name`` (the job's ``api_key_env``); None when neither has one."""
        return self.api_key if self.api_key is not None else os.environ.get(env_name) or None


def shard_of(shard: Shard | str | None) -> Shard | None:
    """A shard as the public API takes it: a :class:`~zbatch.shard.Shard`, or text ("K/N", or
    "auto/N" with the index from the environment, read where this runs)."""
    return Shard.parse(shard, os.environ) if isinstance(shard, str) else shard
