"""zbatch's HTTP/1.1 client for plain ``http://`` endpoints: asyncio protocols on httptools.

zbatch's Client sends through :class:`Http11Transport` when its base URL is ``http://`` with no
user:password and no proxy applies; the rest keeps :class:`~zbatch.transport.AiohttpTransport`
(``Client._shipped_transport`` chooses). It does one
thing — a request with a whole body, an answer read whole — and so costs a fraction of
aiohttp's request path per row (docs/performance.md, "Issue 25, second round"). The parsing is
httptools' (llhttp, in C): status line, headers, Content-Length and chunked bodies.

It behaves as AiohttpTransport does, and tests/test_transport.py checks both:

- a keep-alive pool of at most ``max_connections``; a request beyond it waits for a connection
  (the ``pool`` timeout). A connection is reused only after a whole answer that did not say
  ``Connection: close``; one the server closed while idle (or idle for more than
  :data:`IDLE_SECONDS`) is dropped before anything is sent on it.
- A request is sent at most once. A reset or hang-up after bytes went out is an error for
  zbatch's own retry to decide on, never a silent second POST.
- The same httpx errors: ConnectError (refused, unreachable), ConnectTimeout (no connection
  within the ``pool`` or ``connect`` timeout), ReadTimeout (no byte within ``read``, or the whole
  request past zbatch's ``total``), ReadError (reset, hang-up, a body cut short or undecodable),
  RemoteProtocolError (not HTTP). ConnectError / ConnectTimeout mean nothing was sent. As with
  aiohttp there is no separate write timer: the loop buffers the request, and a server that
  does not read it shows up as a read or total timeout.
- Cancelled (an anyio cancel scope, the hedger) at any point, a request gives its pool slot
  back, and a connection with an answer half read is closed, never pooled.

Error messages name the host and port and the socket error; never a header, so never the key.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Iterator, Mapping

import httptools
import httpx

from . import Reply, Shipped, decoded_response, uncovered

# An idle connection older than this is closed rather than reused (aiohttp's keepalive_timeout):
# the server may be closing it at this moment, and a POST written into that is lost.
IDLE_SECONDS = 15.0


class Headers(Mapping[str, str]):
    """An answer's headers, looked up by name in any case; built on first use (zbatch's Client
    reads them only for an error answer)."""

    __slots__ = ("_by_name", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._by_name: dict[str, str] | None = None

    def _names(self) -> dict[str, str]:
        if self._by_name is None:
            by_name: dict[str, str] = {}
            for name, value in self._raw:
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                by_name[key] = f"{by_name[key]}, {text}" if key in by_name else text
            self._by_name = by_name
        return self._by_name

    def __getitem__(self, name: str) -> str:
        return self._names()[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer into the fields below."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.open = False  # connected, and neither end has closed it
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None  # the answer being waited for
        self._timer: asyncio.TimerHandle | None = None
        self._read: float | None = None  # the longest silence allowed while reading
        self._deadline: float | None = None  # the whole request's end (loop time)
        self._last_data = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.encoding = b""
        self.keep_alive = False
        self._delimited = False  # Content-Length or chunked: not read until the close
        self._headers_done = False

    # --- the request ---

    def usable(self, now: float) -> bool:
        """Connected, not closed by the server, not idle too long: safe to write a request on."""
        transport = self._transport
        return (
            self.open
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < IDLE_SECONDS
        )

    def send(self, data: bytes, read: float | None, deadline: float | None) -> asyncio.Future[None]:
        """Write a whole request; the future completes when its answer is read whole."""
        assert self._transport is not None
        self._reset()
        waiter = self._waiter = self._loop.create_future()
        self._read, self._deadline = read, deadline
        self._transport.write(data)
        if read is not None:
            self._last_data = self._loop.time()
            due = self._last_data + read
            self._timer = self._loop.call_at(
                due if deadline is None else min(due, deadline), self._on_timer
            )
        elif deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
        return waiter

    def finish(self) -> None:
        """The request is over (answered, failed or cancelled): no timer, nothing awaited."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None

    def park(self) -> None:
        """Idle from now on, in the pool."""
        self.idle_since = self._loop.time()

    def close(self, *, abort: bool) -> None:
        self.open = False
        if self._transport is not None:
            # abort: what is left of a cancelled request is not sent; close: flushed first.
            self._transport.abort() if abort else self._transport.close()

    def _on_timer(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        now = self._loop.time()
        if self._deadline is not None and now >= self._deadline:
            return self._fail(httpx.ReadTimeout("no whole answer within the request's timeout"))
        when = self._deadline
        if self._read is not None:
            due = self._last_data + self._read
            if now >= due:
                return self._fail(httpx.ReadTimeout(f"no data for {self._read:g} s"))
            when = due if when is None else min(due, when)
        assert when is not None
        self._timer = self._loop.call_at(when, self._on_timer)

    def _fail(self, exc: httpx.TransportError) -> None:
        self.open = False  # an answer half read leaves the connection unusable
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._delimited:  # a body read until the close: done
            self._complete()
        elif exc is None:
            self._fail(httpx.ReadError("the server closed the connection before a whole answer"))
        else:
            self._fail(httpx.ReadError(f"{type(exc).__name__}: {exc}"))

    def eof_received(self) -> bool:
        self.open = False
        return False  # the transport closes; connection_lost says what it means

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: the connection is spoilt
            self.close(abort=True)
            return
        if self._read is not None:
            self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {exc}"))

    # --- httptools' callbacks ---

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer to one request
            self.open = False

    def on_status(self, status: bytes) -> None:
        self.reason += status  # may come in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-encoding":
            self.encoding = value.strip().lower()
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._headers_done = True
        if self.status in (204, 304) or self.status < 200:
            self._delimited = True  # no body

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # 100 Continue and the like: the answer follows
            self._reset()
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.finish()


class Http11Transport(Shipped):
    """A keep-alive pool of at most ``max_connections`` to the origin of ``url`` (plain http).

    ``post`` is what zbatch's Client sends through (as on AiohttpTransport);
    ``handle_async_request`` is httpx's transport API over the same path.
    """

    def __init__(self, url: httpx.URL, *, max_connections: int) -> None:
        if url.scheme != "http":
            raise ValueError(f"Http11Transport sends plain http://, not {url.scheme}://")
        self._host = url.host
        self._port = url.port or 80
        self._max = max_connections
        self._count = 0  # connections open or being opened
        self._idle: list[_Connection] = []  # the most recently used last
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._target = (str(url), url.raw_path)
        self._limits: tuple[object, tuple[float | None, ...]] = (None, ())

    async def post(
        self,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> Reply:
        """POST ``body`` and read the whole answer (decoded); httpx's TransportErrors on failure."""
        status, reason, raw, content = await self._send("POST", url, headers, body, timeouts)
        return Reply(status, reason, Headers(raw), content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":  # its answer's length describes a body never sent
            raise httpx.UnsupportedProtocol("zbatch's HTTP/1.1 client does not send HEAD")
        items = request.headers.multi_items()
        timeouts = request.extensions.get("timeout", {})
        try:
            status, reason, raw, content = await self._send(
                request.method, str(request.url), items, request.content, timeouts
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise
        return decoded_response(request, status, reason.encode("latin-1"), raw, content)

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close(abort=False)
            self._count -= 1
        await asyncio.sleep(0)  # the transports' closing callbacks run while the loop does

    async def _send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> tuple[int, str, list[tuple[bytes, bytes]], bytes]:
        loop = self._loop or self._bind()
        total, connect, read, pool = self._timeouts(timeouts)
        deadline = None if total is None else loop.time() + total
        data = self._request(method, url, headers, body)
        connection = await self._acquire(loop, pool, connect, deadline)
        whole = False
        try:
            await connection.send(data, read, deadline)
            whole = True
        finally:
            connection.finish()
            self._release(connection, whole)
        content = b"".join(connection.chunks)
        if connection.encoding:
            content = _decoded(connection.encoding, content)
        return connection.status, connection.reason.decode("latin-1"), connection.headers, content

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _request(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """The request's bytes: request line, the headers as given (in order), the body."""
        known, target = self._target
        if url != known:
            parsed = httpx.URL(url)
            if (parsed.scheme, parsed.host, parsed.port or 80) != ("http", self._host, self._port):
                raise httpx.UnsupportedProtocol(
                    f"this transport sends to http://{self._host}:{self._port} only"
                )
            self._target = (url, parsed.raw_path)
            target = parsed.raw_path
        lines = [f"{method} {target.decode('ascii')} HTTP/1.1"]
        for name, value in headers:
            if "\n" in value or "\r" in value:  # named, never quoted: it may be the key
                raise httpx.LocalProtocolError(f"the {name} header holds a line break")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + body

    def _timeouts(
        self, timeouts: dict[str, float | None]
    ) -> tuple[float | None, float | None, float | None, float | None]:
        """httpx's timeouts (and zbatch's ``total``) as (total, connect, read, pool), with a
        timer the total one covers dropped; worked out again only for another dict than the
        last one (zbatch's Client sends the same one)."""
        last, made = self._limits
        if timeouts is not last:
            made = (
                timeouts.get("total"),
                uncovered(timeouts, "connect"),
                uncovered(timeouts, "read"),
                uncovered(timeouts, "pool"),
            )
            self._limits = (timeouts, made)
        total, connect, read, pool = made
        return total, connect, read, pool

    # --- the pool ---

    async def _acquire(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: float | None,
        connect: float | None,
        deadline: float | None,
    ) -> _Connection:
        """An idle connection fit to write on, a new one while under the cap, else the first
        one given back (within ``pool`` seconds)."""
        while True:
            now = loop.time()
            while self._idle:
                connection = self._idle.pop()
                if connection.usable(now):
                    return connection
                connection.close(abort=False)
                self._count -= 1
            if self._count < self._max:
                break
            await self._wait_for_turn(loop, pool, deadline)
        self._count += 1
        try:
            return await self._connect(loop, connect, deadline)
        except BaseException:
            self._count -= 1
            self._wake()
            raise

    async def _wait_for_turn(
        self, loop: asyncio.AbstractEventLoop, pool: float | None, deadline: float | None
    ) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        when, error = _first(loop.time(), pool, deadline, "no free connection within")
        try:
            async with asyncio.timeout_at(when):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, but leaving: the turn passes on
            if isinstance(exc, TimeoutError):
                raise error from None
            raise

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, connect: float | None, deadline: float | None
    ) -> _Connection:
        when, error = _first(loop.time(), connect, deadline, "no connection within")
        try:
            async with asyncio.timeout_at(when):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port
                )
        except TimeoutError:
            raise error from None
        except OSError as exc:
            message = f"cannot connect to {self._host}:{self._port}: {exc}"
            raise httpx.ConnectError(message) from None
        return connection

    def _release(self, connection: _Connection, whole: bool) -> None:
        """Back to the pool after a whole keep-alive answer; closed otherwise (aborted when the
        answer was not read whole)."""
        if whole and connection.keep_alive and connection.open and not self._closed:
            connection.park()
            self._idle.append(connection)
        else:
            connection.close(abort=not whole)
            self._count -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _first(
    now: float, limit: float | None, deadline: float | None, what: str
) -> tuple[float | None, httpx.TimeoutException]:
    """When a wait ends, and the error it ends with: ConnectTimeout for its own ``limit``,
    ReadTimeout for the request's whole deadline (as aiohttp's ``connect`` and ``total``)."""
    if limit is not None and (deadline is None or now + limit < deadline):
        return now + limit, httpx.ConnectTimeout(f"{what} {limit:g} s")
    return deadline, httpx.ReadTimeout("no whole answer within the request's timeout")


def _decoded(encoding: bytes, content: bytes) -> bytes:
    """The body with its Content-Encoding undone (gzip, deflate; anything else as it came)."""
    if not content:
        return content
    try:
        if encoding in (b"gzip", b"x-gzip"):
            return zlib.decompress(content, 16 + zlib.MAX_WBITS)
        if encoding == b"deflate":
            try:
                return zlib.decompress(content)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(content, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise httpx.ReadError(f"cannot decode the {encoding.decode()} body: {exc}") from None
    return content
