"""The cluster-wide in-flight cap, on a real Dask LocalCluster with worker processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import cloudpickle
import httpx
import pytest
from conftest import local_cluster
from zai_server import ZaiServer, answer_for

from zbatch.cluster.limit import LINGER_SECONDS, ClusterLease, ClusterLimit

# The task below runs in worker processes, which cannot import this test module by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CAP = 6


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster(threads_per_worker=2) as connected:
        yield connected


def send_through_cap(
    base_url: str, name: str, task: int, requests: int, senders: int = CAP
) -> list[list[str]]:
    """One task: ``requests`` chat requests from ``senders`` concurrent senders, each inside
    a slot of a ClusterLimit; returns (prompt, answer) pairs."""

    async def main() -> list[list[str]]:
        limit = ClusterLimit(CAP, await ClusterLease.open(name, CAP))
        pairs: list[list[str]] = []
        prompts = iter(f"task {task} request {i}" for i in range(requests))
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

            async def sender() -> None:
                for prompt in prompts:
                    async with limit.slot():
                        body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
                        reply = await http.post("/chat/completions", json=body)
                    reply.raise_for_status()
                    pairs.append([prompt, reply.json()["choices"][0]["message"]["content"]])

            async with anyio.create_task_group() as group:
                for _ in range(senders):
                    group.start_soon(sender)
        limit.close()
        return pairs

    return anyio.run(main)


def semaphore_metrics(dask_scheduler: Any, name: str) -> dict[str, int]:
    extension = dask_scheduler.extensions["semaphores"]
    return {
        "acquired": extension.metrics["acquire_total"][name],
        "released": extension.metrics["release_total"][name],
        "held": len(extension.leases[name]),
    }


def test_peak_in_flight_across_worker_processes_stays_within_the_cap(client: Any) -> None:
    """Four tasks on two worker processes, each able to send CAP requests at once: the server
    never sees more than CAP in flight, every answer is the answer to its own prompt, and
    every lease taken is given back."""
    tasks, per_task = 4, 24
    with ZaiServer(latency=0.05) as server:
        futures = [
            client.submit(send_through_cap, server.base_url, "cap-test", t, per_task, pure=False)
            for t in range(tasks)
        ]
        results = client.gather(futures, errors="raise")
        stats = server.stats()
    pairs = [pair for result in results for pair in result]
    assert len(pairs) == tasks * per_task
    assert len({prompt for prompt, _ in pairs}) == tasks * per_task
    for prompt, answer in pairs:
        assert answer == answer_for([{"role": "user", "content": prompt}])
    assert stats["requests"] == tasks * per_task
    assert stats["max_inflight_seen"] <= CAP
    workers = {w["host"] + str(w["pid"]) for w in client.run(_where).values()}
    assert len(workers) == 2  # two real processes
    metrics = leases_back(client, "cap-test")
    assert 0 < metrics["acquired"] == metrics["released"] <= tasks * per_task


def leases_back(client: Any, name: str) -> dict[str, int]:
    """The semaphore's counters once no lease is held (releases are sent without waiting,
    so the last ones may still be on their way)."""
    for _ in range(300):
        metrics = semaphore_metrics_now(client, name)
        if metrics["held"] == 0:
            return metrics
        time.sleep(0.1)
    raise AssertionError(f"leases still held: {metrics}")


def _where() -> dict[str, Any]:
    import os
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}


def test_a_process_passes_a_finished_requests_lease_to_its_next_one(client: Any) -> None:
    """More requests than the cap, one after another in each process: a finished request's
    lease goes to the next request of its process without a trip to the scheduler, so far
    fewer leases are taken than requests sent, and the cap still holds."""
    tasks, per_task = 2, 48
    with ZaiServer(latency=0.05) as server:
        futures = [
            client.submit(
                send_through_cap, server.base_url, "reuse", t, per_task, 2 * CAP, pure=False
            )
            for t in range(tasks)
        ]
        pairs = [pair for result in client.gather(futures) for pair in result]
        stats = server.stats()
    assert len({prompt for prompt, _ in pairs}) == tasks * per_task
    assert stats["max_inflight_seen"] <= CAP
    metrics = leases_back(client, "reuse")
    assert metrics["released"] == metrics["acquired"] < tasks * per_task / 2


def test_a_cancelled_wait_gives_back_the_lease_granted_after_it(client: Any) -> None:
    """A request cancelled while it waits for a lease (Ctrl-C, a fatal stop) must not keep
    the lease the scheduler grants it later, or the cluster's cap shrinks for good."""
    name = "cancel-test"

    async def main() -> None:
        lease = await ClusterLease.open(name, 1)
        await lease.acquire()  # the only lease: the next acquire has to wait
        with anyio.move_on_after(0.5) as waiting:
            await lease.acquire()
        assert waiting.cancelled_caught
        lease.release()  # now the scheduler grants the cancelled acquire

    anyio.run(main)
    for _ in range(300):
        metrics = semaphore_metrics_now(client, name)
        if metrics["acquired"] == 2:
            break
        time.sleep(0.1)
    assert leases_back(client, name) == {"acquired": 2, "released": 2, "held": 0}


def semaphore_metrics_now(client: Any, name: str) -> dict[str, int]:
    result: dict[str, int] = client.run_on_scheduler(semaphore_metrics, name=name)
    return result


class CountingLease:
    """Stands in for ClusterLease: counts what would go to the scheduler."""

    def __init__(self) -> None:
        self.acquired = 0
        self.released = 0

    async def acquire(self) -> None:
        self.acquired += 1

    def release(self) -> None:
        self.released += 1


def test_a_kept_lease_is_reused_then_given_back_after_the_linger() -> None:
    """A request right after another reuses its lease; a lease nobody takes within
    LINGER_SECONDS goes back on its own; close() gives back the rest."""
    lease = CountingLease()

    async def main() -> None:
        limit = ClusterLimit(4, lease)  # type: ignore[arg-type]
        async with limit.slot():
            pass
        async with limit.slot():  # at once: the kept lease
            pass
        assert (lease.acquired, lease.released) == (1, 0)
        await anyio.sleep(LINGER_SECONDS * 3)
        assert (lease.acquired, lease.released) == (1, 1)
        async with limit.slot(), limit.slot():
            pass
        assert (lease.acquired, lease.released) == (3, 1)
        limit.close()
        assert (lease.acquired, lease.released) == (3, 3)

    anyio.run(main)
