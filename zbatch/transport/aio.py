"""The transport for https and proxies: httpx's request and response types, sent by aiohttp.

On the benchmarks in docs/performance.md aiohttp costs a fraction of httpx's own pool per
request, and cancelling a request under pool contention does not leak a connection slot
(httpcore#1093). Each response is read whole before it is returned (zbatch's answers are small
JSON documents) and decoded by aiohttp, which keeps the per-request Python work small.
"""

from __future__ import annotations

import aiohttp
import httpx

from ..errors import redact
from . import Reply, Shipped, check_proxy, credentials, decoded_response, uncovered

# aiohttp's errors as httpx's, the most specific first (the classes nest).
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (TimeoutError, httpx.ReadTimeout),  # aiohttp's SocketTimeoutError is one too
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # resets, a server that hung up
    (aiohttp.ClientPayloadError, httpx.ReadError),  # a body cut short
    (aiohttp.ClientError, httpx.RemoteProtocolError),  # e.g. a malformed status line
)


class AiohttpTransport(Shipped):
    """One aiohttp session, opened on the first request (inside the event loop).

    ``max_connections`` caps the connections open at once; a request beyond it waits for one
    (within the request's ``pool`` timeout). ``proxy`` is an ``http://[user:pass@]host:port``
    URL, or None. The environment is not consulted here (no proxy variables, no .netrc):
    zbatch's Client passes what :func:`env_proxy` found, looked up once per run.
    """

    def __init__(self, *, max_connections: int, proxy: str | None = None) -> None:
        self._max_connections = max_connections
        # Credentials stay in the URL: aiohttp sends them as Proxy-Authorization (its
        # proxy_headers would reach only an HTTPS proxy's CONNECT, and proxy_auth is deprecated).
        if proxy is not None:
            check_proxy(proxy, "proxy")
        self._proxy = proxy
        self._proxy_secrets = credentials(proxy)  # aiohttp's proxy errors quote the URL
        self._ssl = httpx.create_ssl_context()  # certifi, or SSL_CERT_FILE
        self._session: aiohttp.ClientSession | None = None
        self._last: tuple[object, aiohttp.ClientTimeout | None] = (None, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response, content = await self._send(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            request.content,
            request.extensions.get("timeout", {}),
            request,
        )
        reason = (response.reason or "").encode()
        return decoded_response(request, response.status, reason, response.raw_headers, content)

    async def post(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> Reply:
        """POST ``body`` and read the whole answer, without building httpx's request and
        response objects: zbatch's Client sends every request this way on this transport
        (httpx's Response alone, with its body decoding, cost ~10 % of the CLI's CPU per row:
        docs/performance.md). Failures raise httpx's TransportErrors, as
        :meth:`handle_async_request` does."""
        response, content = await self._send("POST", url, headers, body, timeouts, None)
        return Reply(response.status, response.reason or "", response.headers, content)

    async def _send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: dict[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        session = self._session or self._open()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=self._timeout(timeouts),
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                return response, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = next(kind for cause, kind in _ERRORS if isinstance(exc, cause))
            message = redact(f"{type(exc).__name__}: {exc}", *self._proxy_secrets)
            raise kind(message, request=request) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
        self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's timeouts (connect, read, write, pool) as aiohttp's; made again only when a
        request carries another dict than the last one (zbatch's Client sends the same one).

        A ``total`` key (zbatch's own) bounds the whole request, from waiting for a connection
        to the last byte of the body, however slowly the server sends it.
        """
        last, made = self._last
        if timeouts is last and made is not None:
            return made
        made = aiohttp.ClientTimeout(
            total=timeouts.get("total"),
            connect=uncovered(timeouts, "pool"),  # waiting for a free connection, connecting
            sock_connect=uncovered(timeouts, "connect"),
            sock_read=uncovered(timeouts, "read"),
        )
        self._last = (timeouts, made)
        return made
