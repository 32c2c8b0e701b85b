"""The HTTP client: one attempt at one request becomes a :class:`Success` or a :class:`Failure`.

Nothing here raises for a failed request; every way an attempt can go wrong (transport
error, timeout, error body, unusable 200) is classified into a Failure so the runner can
decide what to do. What a provider's bodies and codes mean is its profile's business
(:mod:`zbatch.providers`); this module only speaks HTTP.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from email.utils import parsedate_to_datetime

import httpx

from ._version import __version__
from .errors import JobError, redact
from .outcome import Failure, Outcome, Scope
from .providers import Provider
from .transport import Reply, Shipped, env_proxy
from .transport.http11 import Http11Transport

# The longest wait a Retry-After header can ask for; a larger (or endless) one is a broken
# header, and the runner caps it further at the row's own deadline.
MAX_RETRY_AFTER = 3600.0


class Client:
    """Sends chat completion requests straight to one shared httpx transport.

    The default transport is zbatch's own :class:`~zbatch.transport.http11.Http11Transport`
    for a plain ``http://`` URL with no proxy, else :class:`~zbatch.transport.aio.AiohttpTransport`,
    through the proxy the environment names (looked up once). ``transport`` is injectable: tests
    pass an ``httpx.MockTransport``, ``--simulate`` passes the simulated endpoint.
    ``timeout`` is a deadline for a whole attempt (connect, send, read) on the default
    transport; an injected transport keeps its own timing.

    Requests skip ``httpx.AsyncClient``: zbatch uses none of its per-request layers (URL
    merging, cookies, auth flows, redirects, event hooks), and they were a third of the CPU
    spent per row.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        max_connections: int,
        provider: Provider,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self._api_key = api_key or ""
        try:
            self._url = httpx.URL(base_url.rstrip("/") + provider.chat_path)
        except httpx.InvalidURL as exc:
            raise JobError(f"base_url is not a usable URL ({exc}): fix it in the job") from None
        headers = httpx.Headers(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
                "Accept-Language": "en-US,en",
                "User-Agent": f"zbatch/{__version__}",
            }
        )
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # The headers httpx's Request(content=...) would send, in its order (Host first,
        # Content-Length last); each request adds its length to them (see _request).
        host = [(b"Host", self._url.netloc)] if self._url.host else []
        self._headers = httpx.Headers(host + headers.raw)
        # "total" is zbatch's own key, read by AiohttpTransport (httpx's transports ignore it):
        # without it a server trickling bytes could hold an attempt for ever.
        timeouts = httpx.Timeout(timeout, connect=min(timeout, 10.0)).as_dict()
        self._extensions = {"timeout": {**timeouts, "total": timeout}}
        self._transport = transport or self._shipped_transport(max_connections)
        # zbatch's own transports are sent to past httpx's request and response objects, with
        # the same headers (Content-Length is added per request).
        self._direct = self._transport if isinstance(self._transport, Shipped) else None
        self._url_text = str(self._url)
        self._header_items = self._headers.multi_items()

    def _shipped_transport(self, max_connections: int) -> Shipped:
        """The transport zbatch ships for its URL: its own HTTP/1.1 client for plain http://
        with no proxy (the least CPU per request), aiohttp for https, proxies and a URL with
        user:password (which aiohttp sends as Basic credentials; imported only then)."""
        proxy = env_proxy(self._url)
        if self._url.scheme == "http" and proxy is None and not self._url.userinfo:
            return Http11Transport(self._url, max_connections=max_connections)
        from .transport.aio import AiohttpTransport

        return AiohttpTransport(max_connections=max_connections, proxy=proxy)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def send(self, body: bytes) -> Outcome:
        """One attempt: POST the body, classify what comes back."""
        started = time.monotonic()
        response: httpx.Response | Reply
        try:
            if self._direct is not None:
                headers = [*self._header_items, ("Content-Length", str(len(body)))]
                timeouts = self._extensions["timeout"]
                response = await self._direct.post(self._url_text, headers, body, timeouts)
                content = response.content
            else:
                response = await self._transport.handle_async_request(self._request(body))
                try:
                    content = await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            return transport_failure(exc, self._api_key)
        latency_ms = int((time.monotonic() - started) * 1000)
        # A body may echo the key; cut it out before any part of the body is quoted.
        raw = scrub(content, self._api_key)
        if response.status_code != 200:
            return error_failure(self.provider, response, raw, self._api_key)
        outcome = self.provider.parse_answer(raw, latency_ms)
        if isinstance(outcome, Failure):  # its message may quote the body
            return replace(outcome, message=redact(outcome.message, self._api_key))
        return outcome

    def _request(self, body: bytes) -> httpx.Request:
        """The request httpx's ``Request(content=body)`` would build, made from parts worked
        out once: its generic path (content sniffing, header defaults) took ~5 µs a request."""
        request = httpx.Request(
            "POST",
            self._url,
            headers=self._headers,  # copied by the request
            stream=httpx.ByteStream(body),
            extensions=self._extensions,
        )
        headers = request.headers
        headers["Content-Length"] = str(len(body))
        # Every header is ASCII (httpx encodes str headers so): no need to sniff it per request.
        headers.encoding = "ascii"
        request.read()  # the body is there: makes request.content available, as content= does
        return request


def scrub(raw: bytes, key: str) -> bytes:
    """An answer body with the whole key replaced, so no truncation can leave a prefix of it."""
    return raw.replace(key.encode(), b"[redacted]") if key else raw


def error_failure(
    provider: Provider, response: httpx.Response | Reply, raw: bytes, key: str
) -> Failure:
    """An error answer (``raw``: its scrubbed body) classified by the provider's rules, with
    its Retry-After."""
    code, message = provider.error_details(raw)
    message = redact(message or response.reason_phrase or "", key)
    failure = provider.classify(response.status_code, code, message)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return failure if retry_after is None else replace(failure, retry_after=retry_after)


def transport_failure(exc: httpx.TransportError, key: str) -> Failure:
    """A request that got no answer: a timeout, or a connection that failed."""
    message = redact(f"{type(exc).__name__}: {exc}", key)
    if isinstance(exc, httpx.TimeoutException):
        return Failure("timeout", Scope.RETRY, message or "request timed out")
    return Failure("connection", Scope.RETRY, message)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`; None when the header is absent or says nothing usable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
