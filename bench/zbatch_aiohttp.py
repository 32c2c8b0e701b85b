"""The zbatch CLI with httpx_aiohttp.AiohttpTransport as its transport (benchmarks only).

    python bench/zbatch_aiohttp.py run -i rows.parquet -o out --base-url ... --concurrency 64

Exactly ``zbatch`` (same flags, same exit codes), except that the Client, when it is given no
transport, gets an AiohttpTransport whose pool is sized like the default one
(max_connections = concurrency). It shows what zbatch would measure if it shipped that
transport; zbatch/ itself is not changed.
"""

from __future__ import annotations

from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

import zbatch.client
from zbatch.cli import main

_original_init = zbatch.client.Client.__init__


def _init(self: Any, **kwargs: Any) -> None:
    if kwargs.get("transport") is None:
        size = kwargs["max_connections"]
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        kwargs["transport"] = AiohttpTransport(limits=limits)
    _original_init(self, **kwargs)


zbatch.client.Client.__init__ = _init  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
