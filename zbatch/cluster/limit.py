"""A cluster-wide in-flight cap: a ``distributed.Semaphore`` lease around each request.

    lease = await ClusterLease.open(f"zbatch-{fingerprint}-c{cap}", cap)
    limit = ClusterLimit(cap, lease)      # an AdaptiveLimit whose slots also hold a lease
    async with limit.slot() as epoch: ...

Z.AI limits requests in flight per key (code 1302); a semaphore on the Dask scheduler is
that limit across every worker process. Each request first takes a slot of its own
process's adaptive limit (cut on 1302/429, regrown on success), then a cluster lease.

The semaphore belongs to the Dask event loop (the worker's, or a client's), while the
runner has an event loop of its own in a task thread. Calls cross between the two with
``run_coroutine_threadsafe``, never through a thread pool: with ``asyncio.to_thread``,
acquires blocked on a full semaphore occupy every pool thread, the releases queue behind
them, and the cap deadlocks. A release is sent without waiting for the answer, so it also
goes out while the runner is being cancelled.

A lease that is not refreshed in time (``distributed.scheduler.locks.lease-timeout``, a
worker frozen for 30 s) is dropped by the scheduler and can let the cap be overbooked for
a moment; the adaptive limit's backoff on 1302/429 is the safety net for that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from distributed import Semaphore

from ..limits import AdaptiveLimit

log = logging.getLogger("zbatch")

_T = TypeVar("_T")

# How long a finished request's lease waits for the next request of its process.
LINGER_SECONDS = 0.05
# How long one acquire waits on the scheduler before it is asked again: a waiter whose
# runner has gone away stops holding a pending request on the scheduler after this long.
ACQUIRE_POLL_SECONDS = 5.0


def on_loop(
    loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[_T]]
) -> concurrent.futures.Future[_T]:
    """Run ``make()`` on ``loop`` (the Dask one) from another thread's loop; Dask objects made
    there answer their methods with awaitables."""

    async def on_dask_loop() -> _T:
        return await make()

    return asyncio.run_coroutine_threadsafe(on_dask_loop(), loop)


class ClusterLease:
    """Leases of one named ``distributed.Semaphore``, taken and given back from any event
    loop."""

    def __init__(self, semaphore: Semaphore) -> None:
        self._semaphore = semaphore
        self._loop: asyncio.AbstractEventLoop = semaphore.loop.asyncio_loop

    @classmethod
    async def open(cls, name: str, cap: int) -> ClusterLease:
        """Register (or join) the semaphore ``name`` of ``cap`` leases on the Dask scheduler
        of the current worker or client."""
        lease = cls(Semaphore(max_leases=cap, name=name))
        await lease._call(lease._register)
        return lease

    async def _register(self) -> None:
        await self._semaphore

    def _call(self, make: Callable[[], Awaitable[_T]]) -> asyncio.Future[_T]:
        return asyncio.wrap_future(self._submit(make))

    def _submit(self, make: Callable[[], Awaitable[_T]]) -> concurrent.futures.Future[_T]:
        return on_loop(self._loop, make)

    async def acquire(self) -> None:
        """Wait for a lease."""
        while True:
            pending = self._submit(self._try_acquire)
            try:
                granted = await asyncio.shield(asyncio.wrap_future(pending))
            except asyncio.CancelledError:
                # The scheduler may still grant it: give it back as soon as it does.
                pending.add_done_callback(self._release_if_granted)
                raise
            if granted:
                return

    async def _try_acquire(self) -> bool:
        granted: bool = await self._semaphore.acquire(timeout=ACQUIRE_POLL_SECONDS)
        return granted

    def _release_if_granted(self, pending: concurrent.futures.Future[bool]) -> None:
        if not pending.cancelled() and pending.exception() is None and pending.result():
            self.release()

    def release(self) -> None:
        """Give one lease back, without waiting for the scheduler's answer."""
        self._submit(self._release)

    async def _release(self) -> None:
        # Semaphore.release logs and returns False when the scheduler cannot be reached;
        # the lease then expires on the scheduler after the lease timeout.
        if not await self._semaphore.release():
            log.warning("a cluster lease could not be given back; it expires by itself")


class ClusterLimit(AdaptiveLimit):
    """An :class:`AdaptiveLimit` for one process whose every slot also holds a cluster lease.

    The lease is taken inside the local slot, so a process never waits on the scheduler for
    more requests than its own adaptive limit allows. A finished request's lease is kept for
    ``LINGER_SECONDS`` and goes to the process's next request if one comes in that time
    (the same worker coroutine usually asks again at once): a trip to the scheduler and
    back per request cost two thirds of a worker process's rate in ``bench/scale.py``.
    Leases kept this way still count against the cap.
    """

    def __init__(self, ceiling: int, lease: ClusterLease) -> None:
        super().__init__(ceiling)
        self._lease = lease
        self._spare: deque[float] = deque()  # when each kept lease was freed, oldest first
        self._sweep: asyncio.TimerHandle | None = None

    async def _acquire(self) -> None:
        await super()._acquire()
        if self._spare:
            self._spare.pop()  # the newest: the older ones age out and go back
            return
        try:
            await self._lease.acquire()
        except BaseException:
            super()._release()
            raise

    def _release(self) -> None:
        self._spare.append(time.monotonic())
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._give_back)
        super()._release()

    def _give_back(self) -> None:
        """Return the leases no request took within ``LINGER_SECONDS``."""
        self._sweep = None
        now = time.monotonic()
        while self._spare and self._spare[0] <= now - LINGER_SECONDS:
            self._spare.popleft()
            self._lease.release()
        if self._spare:
            delay = self._spare[0] + LINGER_SECONDS - now
            self._sweep = asyncio.get_running_loop().call_later(delay, self._give_back)

    def close(self) -> None:
        """Give back every kept lease: the run is over (its loop may end before a sweep)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._spare:
            self._spare.popleft()
            self._lease.release()
