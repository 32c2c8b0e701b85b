"""Client.send through the transports zbatch ships against real loopback servers.

zbatch ships two: its own HTTP/1.1 client on httptools (zbatch/transport/http11.py, for plain http://
without a proxy) and aiohttp (https, proxies). Every test of behaviour on the wire runs on both
(the ``kind`` fixture), so the two answer, fail and time out alike.

test_client.py covers classification with httpx.MockTransport; these check what only a real
socket shows: answers, resets, timeouts, refused connections, the pool size and cancellation.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import random
import re
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_KEY
from zai_server import ZaiServer, answer_for

from zbatch.client import MAX_RETRY_AFTER, Client
from zbatch.errors import JobError
from zbatch.outcome import Failure, Success
from zbatch.providers import ZAI
from zbatch.testing import chat_completion
from zbatch.transport import env_proxy
from zbatch.transport.aio import AiohttpTransport
from zbatch.transport.http11 import Http11Transport

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's proxy settings must not route these loopback requests anywhere else."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def body(text: str) -> bytes:
    return json.dumps(
        {"model": "glm-4.6", "messages": [{"role": "user", "content": text}]}
    ).encode()


KINDS = ["http11", "aiohttp"]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which shipped transport the test sends through."""
    return str(request.param)


def shipped(kind: str, url: str, connections: int) -> AiohttpTransport | Http11Transport:
    if kind == "aiohttp":
        return AiohttpTransport(max_connections=connections)
    return Http11Transport(httpx.URL(url), max_connections=connections)


def make_client(
    base_url: str, *, timeout: float = 5.0, connections: int = 4, kind: str | None = None
) -> Client:
    """A Client on the transport ``kind``, or (None) on the one zbatch picks for the URL."""
    transport = None if kind is None else shipped(kind, base_url, connections)
    return Client(
        base_url=base_url,
        api_key=TEST_KEY,
        timeout=timeout,
        max_connections=connections,
        provider=ZAI,
        transport=transport,
    )


def send_all(base_url: str, texts: list[str], **options: Any) -> list[Any]:
    """Send every text at once through one Client (``make_client``'s options); the outcomes
    in order."""

    async def main() -> list[Any]:
        client = make_client(base_url, **options)
        outcomes: list[Any] = [None] * len(texts)

        async def one(index: int) -> None:
            outcomes[index] = await client.send(body(texts[index]))

        try:
            async with anyio.create_task_group() as group:
                for index in range(len(texts)):
                    group.start_soon(one, index)
        finally:
            await client.aclose()
        return outcomes

    return anyio.run(main)


def send_in_turn(
    base_url: str,
    texts: list[str],
    between: Callable[[], Awaitable[object]] | None = None,
    **options: Any,
) -> list[Any]:
    """Send the texts one after another through one Client (``make_client``'s options),
    awaiting ``between()`` before each one after the first; the outcomes in order."""

    async def main() -> list[Any]:
        client = make_client(base_url, **options)
        outcomes = []
        try:
            for n, text in enumerate(texts):
                if n and between is not None:
                    await between()
                outcomes.append(await client.send(body(text)))
        finally:
            await client.aclose()
        return outcomes

    return anyio.run(main)


def assert_answered(texts: list[str], outcomes: list[Any]) -> None:
    """Each outcome is an answer, the answer to its own prompt."""
    for text, outcome in zip(texts, outcomes, strict=True):
        assert isinstance(outcome, Success), outcome
        assert outcome.content == answer_for([{"role": "user", "content": text}])


def test_each_answer_is_the_answer_to_its_own_prompt_and_carries_the_key(kind: str) -> None:
    texts = [f"Question {n}" for n in range(40)]
    with ZaiServer(require_key=TEST_KEY, latency=0.01) as server:
        outcomes = send_all(server.base_url, texts, connections=8, kind=kind)
        stats = server.stats()
    for text, outcome in zip(texts, outcomes, strict=True):
        assert isinstance(outcome, Success), outcome
        assert outcome.content == answer_for([{"role": "user", "content": text}])
    assert stats["auth_headers_seen"] == 40
    assert stats["max_inflight_seen"] <= 8  # the pool is the concurrency ceiling
    assert stats["connections"] <= 8


@pytest.mark.parametrize(
    ("fault", "error_type", "status"),
    [
        ("reset", "connection", None),
        ("badjson", "invalid_response", 200),
        ("503", "server_error", 503),
        ("1302", "rate_limited", 429),
        ("1113", "fatal", 429),
        ("nomessage", "invalid_response", 200),
        ("error200", "fatal", 200),  # classified by its code, not retried as a bad answer
    ],
)
def test_faults_on_the_wire_are_classified(
    fault: str, error_type: str, status: Any, kind: str
) -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, [f"Question FAIL={fault}"], kind=kind)
        requests = server.stats()["requests"]
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_type, outcome.status_code) == (error_type, status)
    assert requests == 1  # a reset after the request went out is not sent again
    assert TEST_KEY not in outcome.message


def test_an_answer_with_fields_of_the_wrong_types_is_read_into_storable_values(kind: str) -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=oddtypes"], kind=kind)
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question FAIL=oddtypes"}])
    assert isinstance(outcome.request_id, str) and outcome.request_id.isdigit()
    assert outcome.model == "4.6"
    assert outcome.prompt_tokens is None
    assert outcome.usage_malformed
    assert outcome.completion_tokens is not None and outcome.completion_tokens >= 1


def test_a_huge_retry_after_is_capped(kind: str) -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=hugeretry"], kind=kind)
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_code, outcome.retry_after) == ("1302", MAX_RETRY_AFTER)


def test_a_gzip_encoded_answer_is_decoded(kind: str) -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=gzip"], kind=kind)
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question FAIL=gzip"}])


def test_an_answer_slower_than_the_timeout_is_a_timeout(kind: str) -> None:
    with ZaiServer(slow_seconds=3.0) as server:  # bounded even if the timeout were ignored
        [outcome] = send_all(server.base_url, ["Question FAIL=slow"], timeout=0.3, kind=kind)
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "timeout"


def test_a_refused_connection_is_a_connection_failure(kind: str) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [outcome] = send_all(f"http://127.0.0.1:{port}/api/paas/v4", ["Question"], kind=kind)
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "connection"
    assert outcome.retryable


def read_request(connection: socket.socket) -> tuple[bytes, bytes]:
    """One request off ``connection``: its head and its body (by Content-Length); b"" for a
    connection the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length is not None and len(body) < int(length.group(1)):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


@contextlib.contextmanager
def raw_server(
    handle: Callable[[socket.socket, int], object], connections: int = 1
) -> Iterator[str]:
    """A raw loopback server for up to ``connections`` connections, each served in its own
    thread by ``handle(connection, n)`` and then closed. Yields the base URL to send to."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(connections)
        listener.settimeout(10)
        threads: list[threading.Thread] = []

        def serve(connection: socket.socket, n: int) -> None:
            with connection, contextlib.suppress(OSError):
                connection.settimeout(10)
                handle(connection, n)

        def accept() -> None:
            for n in range(connections):
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                thread = threading.Thread(target=serve, args=(connection, n), daemon=True)
                thread.start()
                threads.append(thread)

        acceptor = threading.Thread(target=accept, daemon=True)
        acceptor.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/paas/v4"
        acceptor.join(timeout=30)
        for thread in threads:
            thread.join(timeout=30)


@contextlib.contextmanager
def one_shot_server(reply: Callable[[socket.socket], object]) -> Iterator[str]:
    """A raw loopback server for one connection: it reads the request head, calls
    ``reply(connection)`` and hangs up. Yields the base URL to send to."""
    with raw_server(lambda connection, _: (read_request(connection), reply(connection))) as url:
        yield url


@pytest.mark.parametrize(
    ("reply", "names"),
    [
        # a body shorter than its Content-Length, then the connection closes
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"choices": [', "ReadError"),
        (b"NOT HTTP AT ALL\r\n\r\n", "RemoteProtocolError"),  # no status line
    ],
)
def test_a_broken_answer_on_the_wire_is_a_retryable_connection_failure(
    reply: bytes, names: str, kind: str
) -> None:
    """The server writes ``reply`` and hangs up."""
    with one_shot_server(lambda connection: connection.sendall(reply)) as base_url:
        [outcome] = send_all(base_url, ["Question"], kind=kind)
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_type, outcome.retryable) == ("connection", True)
    assert outcome.message.startswith(f"{names}: "), outcome.message
    assert TEST_KEY not in outcome.message


def test_cancelled_requests_leave_the_pool_usable(kind: str) -> None:
    """Requests cancelled while they wait for, open or use a connection give the slot back.

    httpx's own pool (httpcore 1.0.9, encode/httpcore#1093) loses a slot for each request
    cancelled between being given a new connection and connecting; after `connections` of
    them every request fails with PoolTimeout. zbatch cancels requests on SIGINT/SIGTERM.
    """
    rng = random.Random(7)

    async def main(base_url: str) -> list[Any]:
        client = make_client(base_url, timeout=2.0, connections=4, kind=kind)

        async def churn(worker: int) -> None:  # 32 workers on 4 connections, cut off at 0-50 ms
            for n in range(20):
                with anyio.move_on_after(rng.uniform(0, 0.05)):
                    await client.send(body(f"churn {worker} {n}"))

        probes: list[Any] = []

        async def probe(n: int) -> None:
            probes.append(await client.send(body(f"probe {n}")))

        try:
            async with anyio.create_task_group() as group:
                for worker in range(32):
                    group.start_soon(churn, worker)
            with anyio.fail_after(5):
                async with anyio.create_task_group() as group:
                    for n in range(8):
                        group.start_soon(probe, n)
        finally:
            await client.aclose()
        return probes

    with ZaiServer(latency=0.02) as server:
        probes = anyio.run(main, server.base_url)
    assert len(probes) == 8
    assert all(isinstance(outcome, Success) for outcome in probes), probes


def test_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host below does not exist: the answer can only come through the proxy (the loopback
    server, which answers absolute-form requests as a forward proxy would pass them on)."""
    with ZaiServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:pa%20ss@127.0.0.1:{proxy.port}")
        [outcome] = send_all("http://zbatch-proxy-test.invalid/api/paas/v4", ["Question"])
        stats = proxy.stats()
    assert stats["requests"] == 1
    credentials = base64.b64encode(b"proxy-user:pa ss").decode()
    assert stats["proxy_authorization"] == f"Basic {credentials}"
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question"}])


def test_the_proxy_is_chosen_by_scheme_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    api = httpx.URL("https://api.z.ai/api/paas/v4/chat/completions")
    assert env_proxy(api) is None
    monkeypatch.setenv("HTTP_PROXY", "http://plain.example:3128")
    assert env_proxy(api) is None  # an https URL takes HTTPS_PROXY
    monkeypatch.setenv("HTTPS_PROXY", "proxy.example:8080")
    proxy = env_proxy(api)
    assert proxy == "http://proxy.example:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,.z.ai")
    assert env_proxy(api) is None


def test_a_netrc_entry_for_the_host_does_not_clash_with_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's trust_env would add ~/.netrc credentials beside the Authorization header and
    refuse the request; zbatch's key is the only credential sent."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    with ZaiServer(require_key=TEST_KEY) as server:
        [outcome] = send_all(server.base_url, ["Question"])
    assert isinstance(outcome, Success), outcome


def trickle(data: bytes, *, every: float = 0.1, limit: float = 20.0) -> Any:
    """A reply that sends ``data`` one byte every ``every`` seconds, for at most ``limit`` s."""

    def reply(connection: socket.socket) -> None:
        for index in range(min(len(data), int(limit / every))):
            connection.sendall(data[index : index + 1])
            time.sleep(every)

    return reply


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda c: (c.sendall(HEAD), trickle(b"x" * 400)(c)), id="body"),
        pytest.param(trickle(HEAD), id="head"),
    ],
)
def test_a_server_trickling_bytes_cannot_hold_an_attempt_past_its_timeout(
    reply: Any, kind: str
) -> None:
    """`timeout` bounds the whole attempt, not each read: a byte every 0.1 s keeps every read
    short, and the 1 s attempt still ends as a timeout (the server would trickle for 20 s)."""

    async def main(base_url: str) -> Any:
        with anyio.fail_after(10):  # a hang guard, far above the 1 s deadline
            client = make_client(base_url, timeout=1.0, kind=kind)
            try:
                return await client.send(body("Question"))
            finally:
                await client.aclose()

    with one_shot_server(reply) as base_url:
        outcome = anyio.run(main, base_url)
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_type, outcome.retryable) == ("timeout", True)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("HTTPS_PROXY", "http://user:s3cret@proxy.example:notaport", "Port could not be cast"),
        ("HTTPS_PROXY", "socks5://user:s3cret@proxy.example:1080", "not socks5://"),
        ("ALL_PROXY", "http://user:s3cret@:8080", "names no host"),
        ("HTTPS_PROXY", "http://user:s3cret@[::1:8080", "Invalid IPv6 URL"),
    ],
)
def test_a_malformed_proxy_url_is_one_clear_job_error_without_its_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(JobError) as caught:
        make_client("https://api.example.test/api/paas/v4")
    message = str(caught.value)
    assert message.startswith(f"{variable} is not a usable proxy URL (")
    assert problem in message
    assert "fix it or unset it" in message
    assert "s3cret" not in message


def test_timers_the_whole_attempt_deadline_covers_are_not_armed_as_well() -> None:
    """With zbatch's ``total`` deadline, a read or pool timer as long as it would only cost a
    loop timer per request; a shorter connect timer still counts. Without it, httpx's four."""
    transport = AiohttpTransport(max_connections=1)
    covered = transport._timeout(
        {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 60.0, "total": 60.0}
    )
    assert (covered.total, covered.sock_connect, covered.sock_read, covered.connect) == (
        60.0,
        10.0,
        None,
        None,
    )
    plain = transport._timeout({"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 7.0})
    assert (plain.total, plain.sock_connect, plain.sock_read, plain.connect) == (
        None,
        5.0,
        30.0,
        7.0,
    )


def completion_for(body: bytes) -> bytes:
    """The Z.AI answer to a request body, as the loopback server would send it."""
    request = json.loads(body)
    content = answer_for(request["messages"])
    answer = chat_completion(request, content, model="glm-4.6", answer_id="a1", request_id="r1")
    return json.dumps(answer).encode()


def http_answer(payload: bytes, *headers: str) -> bytes:
    return "".join(f"{h}\r\n" for h in ("HTTP/1.1 200 OK", *headers, "")).encode() + payload


def test_the_headers_on_the_wire_are_the_same_on_both_transports() -> None:
    """Host first, Content-Length last, zbatch's own list between, and nothing else: on both
    transports alike (the loopback Z.AI server and real providers see one client)."""
    heads: dict[str, list[bytes]] = {}

    def reply(connection: socket.socket, _: int) -> None:
        head, body = read_request(connection)
        payload = completion_for(body)
        connection.sendall(http_answer(payload, f"Content-Length: {len(payload)}"))
        heads.setdefault("now", []).append(head)

    for kind in KINDS:
        with raw_server(reply) as base_url:
            [outcome] = send_all(base_url, ["Question"], kind=kind)
        assert isinstance(outcome, Success), outcome
        heads[kind] = heads.pop("now")[0].split(b"\r\n")
    names = {
        kind: [line.split(b":")[0].lower() for line in head[1:]] for kind, head in heads.items()
    }
    assert (
        heads["http11"][0] == heads["aiohttp"][0] == b"POST /api/paas/v4/chat/completions HTTP/1.1"
    )
    assert names["http11"] == names["aiohttp"]
    assert names["http11"][0] == b"host" and names["http11"][-1] == b"content-length"
    assert heads["http11"][2:] == heads["aiohttp"][2:]  # the same values too (Host: its port)
    assert f"Bearer {TEST_KEY}".encode() in b"\n".join(heads["http11"])


def test_a_keep_alive_connection_carries_one_request_after_another(kind: str) -> None:
    texts = [f"Question {n}" for n in range(10)]
    with ZaiServer() as server:
        outcomes = send_in_turn(server.base_url, texts, kind=kind)
        stats = server.stats()
    assert_answered(texts, outcomes)
    assert (stats["requests"], stats["connections"]) == (10, 1)


def test_a_request_beyond_the_pool_waits_and_the_pool_timeout_ends_the_wait(kind: str) -> None:
    """One connection, held by a slow answer: a second request waits for it, and the pool
    timeout ends that wait with the error that says nothing was sent (ConnectTimeout)."""

    async def main(base_url: str) -> tuple[Any, BaseException | None]:
        url = base_url + ZAI.chat_path
        transport = shipped(kind, url, 1)
        timeouts: dict[str, float | None] = {"connect": 5.0, "read": 5.0, "pool": 0.2}
        replies: list[Any] = []
        caught: BaseException | None = None

        async def post(text: str) -> Any:
            data = body(text)
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
            return await transport.post(url, headers, data, timeouts)

        async def slow() -> None:
            replies.append(await post("Question FAIL=slow"))

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(slow)
                await anyio.wait_all_tasks_blocked()
                try:
                    await post("Question")
                except httpx.TransportError as exc:
                    caught = exc
        finally:
            await transport.aclose()
        return replies, caught

    with ZaiServer(slow_seconds=1.0) as server:
        replies, caught = anyio.run(main, server.base_url)
        stats = server.stats()
    assert isinstance(caught, httpx.ConnectTimeout), caught
    assert [reply.status_code for reply in replies] == [200]
    assert (stats["requests"], stats["max_inflight_seen"]) == (1, 1)


def test_a_connection_the_answer_closes_is_not_used_again(kind: str) -> None:
    """`Connection: close`: the server answers, then leaves the socket open and unread; a
    client that sent the next request on it would wait for an answer that never comes."""
    served: list[int] = []

    def reply(connection: socket.socket, n: int) -> None:
        head, request = read_request(connection)
        payload = completion_for(request)
        connection.sendall(
            http_answer(payload, f"Content-Length: {len(payload)}", "Connection: close")
        )
        served.append(n)
        head, _ = read_request(connection)  # b"": the client closed it, as it should
        assert head == b"", "a request was sent on a connection the answer closed"

    texts = ["Question 0", "Question 1"]
    with raw_server(reply, connections=2) as base_url:
        outcomes = send_in_turn(base_url, texts, timeout=3.0, kind=kind)
    assert_answered(texts, outcomes)
    assert sorted(served) == [0, 1]


def test_a_connection_the_server_closed_while_idle_is_not_reused(kind: str) -> None:
    """The server answers keep-alive, then closes the idle connection: the next request goes
    on a new one and is answered, and each request reached the server once."""
    closed = threading.Event()
    requests: list[bytes] = []

    def reply(connection: socket.socket, _: int) -> None:
        _, request = read_request(connection)
        requests.append(request)
        payload = completion_for(request)
        connection.sendall(http_answer(payload, f"Content-Length: {len(payload)}"))
        connection.shutdown(socket.SHUT_RDWR)
        connection.close()
        closed.set()

    async def after_the_close() -> None:
        await anyio.to_thread.run_sync(closed.wait, 10)
        await anyio.sleep(0.05)  # the loop reads the close (loopback: already there)

    texts = ["Question 0", "Question 1"]
    with raw_server(reply, connections=2) as base_url:
        outcomes = send_in_turn(base_url, texts, after_the_close, timeout=3.0, kind=kind)
    assert_answered(texts, outcomes)
    assert [json.loads(r)["messages"][0]["content"] for r in requests] == [
        "Question 0",
        "Question 1",
    ]


def test_a_request_cancelled_after_it_was_sent_leaves_no_answer_for_the_next(kind: str) -> None:
    """Cancelled while its answer is on the way, a request's connection is not pooled half
    read: the next request on the one-connection pool gets its own answer, not that one."""

    async def main(server: ZaiServer) -> Any:
        client = make_client(server.base_url, connections=1, kind=kind)
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:
                    group.start_soon(client.send, body("Question 0"))
                    for _ in range(500):  # until the server has the request (bounded: 5 s)
                        if server.stats()["requests"]:
                            break
                        await anyio.sleep(0.01)
                    scope.cancel()
            return await client.send(body("Question 1"))
        finally:
            await client.aclose()

    with ZaiServer(latency=0.3) as server:
        outcome = anyio.run(main, server)
        stats = server.stats()
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question 1"}])
    assert (stats["requests"], stats["connections"]) == (2, 2)


def _chunked(payload: bytes) -> bytes:
    parts = [payload[i : i + 100] for i in range(0, len(payload), 100)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,  # zlib-wrapped, as RFC 9110 says
    "raw-deflate": lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS),
    "identity": lambda data: data,
}


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_bodies_framed_and_encoded_every_way_are_read_whole(
    kind: str, framing: str, encoding: str
) -> None:
    """Content-Length, chunked (in 100-byte chunks) and read-until-close bodies, gzip, deflate
    (zlib and raw) or plain: the answer is the answer to the prompt."""

    def reply(connection: socket.socket, _: int) -> None:
        _, request = read_request(connection)
        payload = ENCODINGS[encoding](completion_for(request))
        name = "deflate" if encoding == "raw-deflate" else encoding
        headers = [f"Content-Encoding: {name}"] if encoding != "identity" else []
        if framing == "content-length":
            answer = http_answer(payload, *headers, f"Content-Length: {len(payload)}")
        elif framing == "chunked":
            answer = http_answer(_chunked(payload), *headers, "Transfer-Encoding: chunked")
        else:
            answer = http_answer(payload, *headers, "Connection: close")
        connection.sendall(answer)

    with raw_server(reply) as base_url:
        [outcome] = send_all(base_url, ["Question"], kind=kind)
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question"}])


def test_the_shipped_transport_is_chosen_by_scheme_and_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zbatch's own HTTP/1.1 client for plain http:// with no proxy; aiohttp for https, for
    any proxy and for a URL holding user:password."""
    plain = make_client("http://127.0.0.1:9/api/paas/v4")
    secure = make_client("https://api.example.test/api/paas/v4")
    assert isinstance(plain._direct, Http11Transport)
    assert isinstance(secure._direct, AiohttpTransport)
    with_credentials = make_client("http://user:pw@127.0.0.1:9/api/paas/v4")
    assert isinstance(with_credentials._direct, AiohttpTransport)  # it sends them as Basic
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    assert isinstance(make_client("http://api.example.test/v4")._direct, AiohttpTransport)


def test_the_http11_transport_answers_through_httpx_api() -> None:
    """handle_async_request: httpx's Response, the body decoded and its encoding headers gone
    (as on aiohttp)."""

    async def main(base_url: str) -> httpx.Response:
        transport = Http11Transport(httpx.URL(base_url), max_connections=2)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(
                base_url + ZAI.chat_path, content=body("Question FAIL=gzip")
            )
            await response.aread()
            return response

    with ZaiServer() as server:
        response = anyio.run(main, server.base_url)
    assert (response.status_code, response.reason_phrase) == (200, "OK")
    assert "content-encoding" not in response.headers
    content = response.json()["choices"][0]["message"]["content"]
    assert content == answer_for([{"role": "user", "content": "Question FAIL=gzip"}])


def test_a_connection_not_accepted_in_time_is_a_connect_timeout(kind: str) -> None:
    """A listener whose accept queue is full drops the SYN: the connect timer ends the wait
    with ConnectTimeout (nothing was sent) on both transports."""
    with socket.socket() as listener, contextlib.ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):  # fill the accept queue; nothing ever accepts them
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        url = f"http://127.0.0.1:{port}/api/paas/v4/chat/completions"

        async def main() -> BaseException | None:
            transport = shipped(kind, url, 1)
            try:
                with anyio.fail_after(10):  # a hang guard, far above the 0.3 s timer
                    await transport.post(url, [("Content-Length", "2")], b"{}", {"connect": 0.3})
            except httpx.TransportError as exc:
                return exc
            finally:
                await transport.aclose()
            return None

        caught = anyio.run(main)
    assert isinstance(caught, httpx.ConnectTimeout), caught
