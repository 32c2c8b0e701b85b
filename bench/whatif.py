"""What-if patches: zbatch's Client with the hot-path fixes that docs/performance.md proposes.

They are applied at run time, inside the benchmark process only (zbatch/ is not edited), so
``throughput.py --what-if`` can measure each proposal against the shipped code in the same
run. Each keeps Client.send's contract: one attempt in, a Success or a classified Failure out.

  direct     skip httpx.AsyncClient's per-request layers (URL merge, cookie jar, auth and
             redirect handling, event hooks): build one httpx.Request from a pre-parsed URL
             and pre-merged headers and hand it straight to the client's transport.
  native     no httpx on the hot path at all: one aiohttp.ClientSession, TCPConnector
             limited to the concurrency; status/headers/body turned into the same
             Success/Failure (error bodies go through the unchanged Client._error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
from collections.abc import Iterator
from typing import Any

import httpx

from zbatch.client import Client, parse_answer
from zbatch.errors import Failure, Scope, redact

try:
    import aiohttp
except ImportError:  # pragma: no cover - optional benchmark dependency
    aiohttp = None


def _outcome(client: Any, status: int, headers: Any, raw: bytes, latency_ms: int) -> Any:
    """Status and body to an outcome, the way the installed Client.send does it.

    zbatch/client.py is being edited while these benchmarks are written: newer versions scrub
    the key from the body and give ``_error`` the body as a second argument; both are used
    when present.
    """
    scrub = getattr(client, "_scrub", None)
    if scrub is not None:
        raw = scrub(raw)
    if status != 200:
        response = httpx.Response(status, headers=headers, content=raw)
        if len(inspect.signature(client._error).parameters) >= 2:
            return client._error(response, raw)
        return client._error(response)
    outcome = parse_answer(raw, latency_ms)
    if scrub is not None and isinstance(outcome, Failure):
        return dataclasses.replace(outcome, message=redact(outcome.message, client._api_key))
    return outcome


@contextlib.contextmanager
def _patched(**methods: Any) -> Iterator[None]:
    saved = {name: getattr(Client, name) for name in methods}
    try:
        for name, method in methods.items():
            setattr(Client, name, method)
        yield
    finally:
        for name, method in saved.items():
            setattr(Client, name, method)


@contextlib.contextmanager
def direct() -> Iterator[None]:
    """Client.send hands a pre-built httpx.Request straight to the transport."""
    original_init = Client.__init__

    def __init__(self: Any, **kwargs: Any) -> None:
        original_init(self, **kwargs)
        self._url_obj = httpx.URL(self._url)
        # The transport the client would pick for this URL (proxy mounts included), once.
        self._direct = self._http._transport_for_url(self._url_obj)
        self._headers_raw = self._http.headers.raw
        self._extensions = {"timeout": self._http.timeout.as_dict()}

    async def send(self: Any, body: bytes) -> Any:
        started = time.monotonic()
        request = httpx.Request(
            "POST",
            self._url_obj,
            headers=self._headers_raw,
            content=body,
            extensions=self._extensions,
        )
        try:
            response = await self._direct.handle_async_request(request)
            try:
                raw = b"".join([chunk async for chunk in response.stream])
            finally:
                await response.stream.aclose()
        except httpx.TimeoutException as exc:
            return Failure("timeout", Scope.RETRY, self._describe(exc) or "request timed out")
        except httpx.TransportError as exc:
            return Failure("connection", Scope.RETRY, self._describe(exc))
        latency_ms = int((time.monotonic() - started) * 1000)
        return _outcome(self, response.status_code, response.headers, raw, latency_ms)

    with _patched(__init__=__init__, send=send):
        yield


@contextlib.contextmanager
def native() -> Iterator[None]:
    """Client.send on one aiohttp.ClientSession (no httpx per request)."""
    assert aiohttp is not None
    original_init = Client.__init__

    def __init__(self: Any, **kwargs: Any) -> None:
        original_init(self, **kwargs)
        self._limit = kwargs["max_connections"]
        self._session = None
        timeout = kwargs["timeout"]
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(timeout, 10.0), sock_read=timeout
        )
        self._plain_headers = dict(self._http.headers)

    async def send(self: Any, body: bytes) -> Any:
        if self._session is None:  # made inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=self._timeout,
                headers=self._plain_headers,
                auto_decompress=True,
            )
        started = time.monotonic()
        try:
            async with self._session.post(self._url, data=body) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError as exc:
            return Failure("timeout", Scope.RETRY, self._describe(exc) or "request timed out")
        except aiohttp.ClientError as exc:
            return Failure("connection", Scope.RETRY, self._describe(exc))
        latency_ms = int((time.monotonic() - started) * 1000)
        return _outcome(self, status, list(headers.items()), raw, latency_ms)

    async def aclose(self: Any) -> None:
        if self._session is not None:
            await self._session.close()
        await self._http.aclose()

    with _patched(__init__=__init__, send=send, aclose=aclose):
        yield


PATCHES = {"direct": direct, "native": native}
