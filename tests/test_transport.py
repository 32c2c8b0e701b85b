"""Client.send through the transport zbatch ships (aiohttp) against the loopback server.

test_client.py covers classification with httpx.MockTransport; these check what only a real
socket shows: answers, resets, timeouts, refused connections, the pool size and cancellation.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
from zbatch.transport import AiohttpTransport, env_proxy

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


def make_client(base_url: str, *, timeout: float = 5.0, connections: int = 4) -> Client:
    return Client(
        base_url=base_url,
        api_key=TEST_KEY,
        timeout=timeout,
        max_connections=connections,
        provider=ZAI,
    )


def send_all(base_url: str, texts: list[str], **options: Any) -> list[Any]:
    """Send every text at once through one shipped Client; the outcomes in order."""

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


def test_each_answer_is_the_answer_to_its_own_prompt_and_carries_the_key() -> None:
    texts = [f"Question {n}" for n in range(40)]
    with ZaiServer(require_key=TEST_KEY, latency=0.01) as server:
        outcomes = send_all(server.base_url, texts, connections=8)
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
def test_faults_on_the_wire_are_classified(fault: str, error_type: str, status: Any) -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, [f"Question FAIL={fault}"])
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_type, outcome.status_code) == (error_type, status)


def test_an_answer_with_fields_of_the_wrong_types_is_read_into_storable_values() -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=oddtypes"])
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question FAIL=oddtypes"}])
    assert isinstance(outcome.request_id, str) and outcome.request_id.isdigit()
    assert outcome.model == "4.6"
    assert outcome.prompt_tokens is None
    assert outcome.usage_malformed
    assert outcome.completion_tokens is not None and outcome.completion_tokens >= 1


def test_a_huge_retry_after_is_capped() -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=hugeretry"])
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_code, outcome.retry_after) == ("1302", MAX_RETRY_AFTER)


def test_a_gzip_encoded_answer_is_decoded() -> None:
    with ZaiServer() as server:
        [outcome] = send_all(server.base_url, ["Question FAIL=gzip"])
    assert isinstance(outcome, Success), outcome
    assert outcome.content == answer_for([{"role": "user", "content": "Question FAIL=gzip"}])


def test_an_answer_slower_than_the_timeout_is_a_timeout() -> None:
    with ZaiServer(slow_seconds=3.0) as server:  # bounded even if the timeout were ignored
        [outcome] = send_all(server.base_url, ["Question FAIL=slow"], timeout=0.3)
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "timeout"


def test_a_refused_connection_is_a_connection_failure() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    [outcome] = send_all(f"http://127.0.0.1:{port}/api/paas/v4", ["Question"])
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "connection"
    assert outcome.retryable


@contextlib.contextmanager
def one_shot_server(reply: Callable[[socket.socket], object]) -> Iterator[str]:
    """A raw loopback server for one connection: it reads the request head, calls
    ``reply(connection)`` and hangs up. Yields the base URL to send to."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)

        def serve() -> None:
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(10)
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += connection.recv(65536) or b"\r\n\r\n"
                    reply(connection)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/paas/v4"
        server.join(timeout=30)


@pytest.mark.parametrize(
    ("reply", "names"),
    [
        # a body shorter than its Content-Length, then the connection closes
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"choices": [', "ReadError"),
        (b"NOT HTTP AT ALL\r\n\r\n", "RemoteProtocolError"),  # no status line
    ],
)
def test_a_broken_answer_on_the_wire_is_a_retryable_connection_failure(
    reply: bytes, names: str
) -> None:
    """The server writes ``reply`` and hangs up."""
    with one_shot_server(lambda connection: connection.sendall(reply)) as base_url:
        [outcome] = send_all(base_url, ["Question"])
    assert isinstance(outcome, Failure), outcome
    assert (outcome.error_type, outcome.retryable) == ("connection", True)
    assert outcome.message.startswith(f"{names}: "), outcome.message


def test_cancelled_requests_leave_the_pool_usable() -> None:
    """Requests cancelled while they wait for, open or use a connection give the slot back.

    httpx's own pool (httpcore 1.0.9, encode/httpcore#1093) loses a slot for each request
    cancelled between being given a new connection and connecting; after `connections` of
    them every request fails with PoolTimeout. zbatch cancels requests on SIGINT/SIGTERM.
    """
    rng = random.Random(7)

    async def main(base_url: str) -> list[Any]:
        client = make_client(base_url, timeout=2.0, connections=4)

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
def test_a_server_trickling_bytes_cannot_hold_an_attempt_past_its_timeout(reply: Any) -> None:
    """`timeout` bounds the whole attempt, not each read: a byte every 0.1 s keeps every read
    short, and the 1 s attempt still ends as a timeout (the server would trickle for 20 s)."""

    async def main(base_url: str) -> Any:
        with anyio.fail_after(10):  # a hang guard, far above the 1 s deadline
            client = make_client(base_url, timeout=1.0)
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
