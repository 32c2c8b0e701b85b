"""Correctness under cancellation: does cancelling requests under pool contention leak slots?

    python bench/cancel_check.py                     # both transports, 5 s of churn each
    python bench/cancel_check.py --seconds 10 --rounds 3

httpcore issue 1093: a request cancelled after the pool assigned it a brand-new connection,
but before that connection connected, leaves the connection in the pool for good (neither
idle, closed nor expired); once max_connections of them pile up, every request fails with
PoolTimeout. This check reproduces that pattern through httpx.AsyncClient on two transports:
"default" (httpx's own, httpcore) and "aiohttp" (the one zbatch ships,
zbatch.transport.aio.AiohttpTransport): a small pool (--pool), more tasks than slots (--tasks), each
request run under a random deadline (anyio.move_on_after) against a fake server with some
latency, for --seconds.
Then, with no more cancellations, --probe plain requests with a short pool timeout show
whether the pool still works, and the pool's own state is printed where it is visible.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import anyio
import httpx
from common import arg_parser, fake_server, print_table, prompt_for, request_body, say, start

from zbatch.transport.aio import AiohttpTransport


def _client(kind: str, url: str, pool: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    timeout = httpx.Timeout(5.0, pool=2.0)
    transport = AiohttpTransport(max_connections=pool) if kind == "aiohttp" else None
    return httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport)


def _stuck_connections(client: httpx.AsyncClient) -> str:
    """httpcore's view: connections that hold a slot without ever having connected."""
    pool = getattr(client._transport, "_pool", None)
    connections = getattr(pool, "connections", None)
    if connections is None:
        return "n/a"
    stuck = sum(1 for c in connections if "CONNECTING" in repr(c))
    return f"{stuck} of {len(connections)}"


async def churn(kind: str, url: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    counts = {"ok": 0, "cancelled": 0, "errors": 0}
    kinds: dict[str, int] = {}
    body = json.dumps(request_body(prompt_for(0))).encode()
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + args.seconds
    async with _client(kind, url, args.pool) as client:

        async def task() -> None:
            while time.monotonic() < deadline:
                with anyio.move_on_after(rng.uniform(0.0, args.max_deadline)) as scope:
                    try:
                        response = await client.post(url, content=body, headers=headers)
                        response.raise_for_status()
                        counts["ok"] += 1
                    except httpx.HTTPError as exc:
                        counts["errors"] += 1
                        kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                if scope.cancelled_caught:
                    counts["cancelled"] += 1

        async with anyio.create_task_group() as group:
            for _ in range(args.tasks):
                group.start_soon(task)
        stuck = _stuck_connections(client)
        probe_ok = probe_timeouts = 0
        started = time.monotonic()
        for _ in range(args.probe):
            try:
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
                probe_ok += 1
            except httpx.PoolTimeout:
                probe_timeouts += 1
            except httpx.HTTPError:
                pass
        probe_seconds = time.monotonic() - started
    return {
        **counts,
        "kinds": ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-",
        "stuck": stuck,
        "probe_ok": probe_ok,
        "probe_timeouts": probe_timeouts,
        "probe_seconds": probe_seconds,
    }


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="churn time per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per transport")
    parser.add_argument("--pool", type=int, default=8, help="max_connections")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks")
    parser.add_argument("--latency", type=float, default=0.02, help="server latency (s)")
    parser.add_argument("--max-deadline", type=float, default=0.05, help="random deadline cap")
    parser.add_argument("--probe", type=int, default=8, help="requests after the churn")
    args = start(parser)
    kinds = ["default", "aiohttp"]
    rows = []
    with fake_server(latency=args.latency) as server:
        for round_number in range(1, args.rounds + 1):
            for kind in kinds:
                say(f"round {round_number}: {kind} transport, {args.seconds:g} s of churn ...")
                result = anyio.run(churn, kind, server.url, args, round_number)
                rows.append(
                    [
                        kind,
                        round_number,
                        result["ok"],
                        result["cancelled"],
                        result["errors"],
                        result["kinds"],
                        result["stuck"],
                        f"{result['probe_ok']} / {args.probe}",
                        result["probe_timeouts"],
                        f"{result['probe_seconds']:.1f}",
                    ]
                )
    title = (
        f"Cancellation churn: pool {args.pool}, {args.tasks} tasks, random deadlines "
        f"0-{args.max_deadline * 1000:.0f} ms, server latency {args.latency * 1000:.0f} ms, "
        f"{args.seconds:g} s per round; then {args.probe} plain requests (pool timeout 2 s)"
    )
    headers = [
        "transport",
        "round",
        "ok",
        "cancelled",
        "errors",
        "error types",
        "never-connected conns in pool",
        "probe ok",
        "probe PoolTimeouts",
        "probe s",
    ]
    print_table(title, headers, rows)


if __name__ == "__main__":
    main()
