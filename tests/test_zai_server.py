"""Quick checks of the fake Z.AI server, with the stdlib HTTP client only.

The fake is the oracle for zbatch's integration tests and benchmarks, so its answers, fault
directives, limits and stats must be right before anything is judged against them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from zai_server import ZaiServer, answer_for, max_in_window

CHAT = "/api/paas/v4/chat/completions"


@pytest.fixture
def server() -> Iterator[ZaiServer]:
    with ZaiServer() as srv:
        yield srv


def call(
    port: int,
    method: str,
    path: str,
    payload: object = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; returns status, headers and the JSON body (raw text if not JSON)."""
    own = conn is None
    connection = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        body = None if payload is None else json.dumps(payload)
        connection.request(
            method, path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        raw = response.read().decode()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        return response.status, dict(response.getheaders()), parsed
    finally:
        if own:
            connection.close()


def chat(port: int, prompt: str, **extra: Any) -> tuple[int, dict[str, str], Any]:
    payload = {"model": "glm-4.5-flash", "messages": [{"role": "user", "content": prompt}], **extra}
    return call(port, "POST", CHAT, payload)


def test_answer_for_rules() -> None:
    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": "LABEL=system"}, {"role": "user", "content": text}]

    assert answer_for(user("Classify. LABEL=Positive. thanks")) == "Positive."
    assert answer_for(user('x LABEL="Label: Positive." y')) == "Label: Positive."
    assert answer_for(user('JSON={"a": [1, 2]}\nnext line')) == '{"a": [1, 2]}'
    assert answer_for(user("plain")) == "echo:" + hashlib.sha1(b"plain").hexdigest()[:16]
    two_turns = [
        {"role": "user", "content": "LABEL=old"},
        {"role": "assistant", "content": "old"},
        {"role": "user", "content": [{"type": "text", "text": "LABEL=new"}]},
    ]
    assert answer_for(two_turns) == "new"


def test_max_in_window() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 59.9, 60.0, 61.0, 119.95]) == 3
    assert max_in_window([5, 1, 3], window=2.5) == 2


def test_normal_answer_shape_and_keep_alive(server: ZaiServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        prompts = [f"prompt {i}" for i in range(5)]
        for prompt in prompts:
            payload = {
                "model": "glm-4.7",
                "messages": [{"role": "user", "content": prompt}],
                "thinking": {"type": "enabled"},
            }
            status, _, body = call(server.port, "POST", CHAT, payload, conn=conn)
            assert status == 200
            assert body["model"] == "glm-4.7"
            choice = body["choices"][0]
            assert choice["index"] == 0 and choice["finish_reason"] == "stop"
            expected = answer_for(payload["messages"])
            assert choice["message"] == {
                "role": "assistant",
                "content": expected,
                "reasoning_content": "thought about " + expected,
            }
            usage = body["usage"]
            assert usage["prompt_tokens"] == max(1, len(prompt) // 4)
            assert usage["completion_tokens"] == len(expected) // 4
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
        status, _, body = call(
            server.port,
            "POST",
            "/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "LABEL=x"}]},
            conn=conn,
        )
        assert status == 200 and "reasoning_content" not in body["choices"][0]["message"]
    finally:
        conn.close()
    stats = server.stats()
    assert stats["connections"] == 1
    assert stats["successes"] == stats["requests"] == 6
    assert stats["answered_prompts"] == [*prompts, "LABEL=x"]
    assert len(stats["bodies_sample"]) == 6 and stats["bodies_sample"][0]["model"] == "glm-4.7"


def test_ids_are_unique(server: ZaiServer) -> None:
    bodies = [chat(server.port, "same")[2] for _ in range(3)]
    assert len({b["id"] for b in bodies}) == 3
    assert len({b["request_id"] for b in bodies}) == 3


def test_fail_directive_sequence(server: ZaiServer) -> None:
    prompt = "Q1 FAIL=1302,500,reset,badjson,sensitive,retryafter,429,1304 LABEL=ok"
    status, _, body = chat(server.port, prompt)
    assert (status, body["error"]["code"]) == (429, "1302")
    status, _, body = chat(server.port, prompt)
    assert (status, body) == (500, {"error": {"code": "500", "message": "Internal error"}})
    with pytest.raises(ConnectionError):
        chat(server.port, prompt)
    status, _, body = chat(server.port, prompt)
    assert (status, body) == (200, '{"choices": [')
    status, _, body = chat(server.port, prompt)
    assert status == 200 and body["choices"][0]["finish_reason"] == "sensitive"
    assert body["choices"][0]["message"]["content"] == ""
    status, headers, body = chat(server.port, prompt)
    assert (status, headers.get("Retry-After"), body["error"]["code"]) == (429, "1", "1302")
    status, _, body = chat(server.port, prompt)
    assert (status, body) == (429, "Too Many Requests")
    status, _, body = chat(server.port, prompt)
    assert status == 429 and body["error"]["code"] == "1304"
    assert "resets at 20" in body["error"]["message"]
    status, _, body = chat(server.port, prompt)
    assert status == 200 and body["choices"][0]["message"]["content"] == "ok"
    # A different prompt has its own attempt count; a star repeats forever.
    for _ in range(3):
        status, _, body = chat(server.port, "Q2 FAIL=1301*")
        assert (status, body["error"]["code"]) == (400, "1301")
    stats = server.stats()
    assert stats["successes"] == 1 and stats["answered_prompts"] == [prompt]
    assert stats["errors_by_code"] == {
        "1302": 2, "500": 1, "reset": 1, "badjson": 1, "sensitive": 1, "429": 1, "1304": 1,
        "1301": 3,
    }  # fmt: skip
    server.reset_stats()
    status, _, body = chat(server.port, prompt)
    assert status == 429, "reset_stats restarts the FAIL attempt counts"


def test_max_inflight_rejects_extra_concurrent_requests(server: ZaiServer) -> None:
    server.configure(max_inflight=2, latency=0.5)
    barrier = threading.Barrier(5)
    results: list[tuple[int, str | None]] = []

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.connect()
            barrier.wait(timeout=5)
            status, _, body = call(
                server.port,
                "POST",
                CHAT,
                {"model": "m", "messages": [{"role": "user", "content": f"p{index}"}]},
                conn=conn,
            )
            results.append((status, body["error"]["code"] if status != 200 else None))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(results, key=str) == [(200, None)] * 2 + [(429, "1302")] * 3
    stats = server.stats()
    assert stats["max_inflight_seen"] == 3 and stats["inflight"] == 0
    assert stats["errors_by_code"] == {"1302": 3} and stats["successes"] == 2


def test_fatal_code_fatal_after_and_require_key(server: ZaiServer) -> None:
    server.configure(fatal_after=2)
    assert [chat(server.port, f"a{i}")[0] for i in range(4)] == [200, 200, 429, 429]
    assert chat(server.port, "a")[2]["error"]["code"] == "1113"
    server.configure(fatal_after=None, fatal_code="1001")
    status, _, body = chat(server.port, "b")
    assert (status, body["error"]["code"]) == (401, "1001")
    server.configure(fatal_code=None, require_key="sk-test")
    assert chat(server.port, "c")[0] == 401
    status, _, _ = call(
        server.port,
        "POST",
        CHAT,
        {"model": "m", "messages": [{"role": "user", "content": "c"}]},
        {"Authorization": "Bearer sk-test"},
    )
    assert status == 200
    assert server.stats()["auth_headers_seen"] == 1


def test_control_rpm_rates_and_stats_endpoints(server: ZaiServer) -> None:
    status, _, config = call(server.port, "POST", "/control", {"rpm": 3, "latency": 0})
    assert status == 200 and config["rpm"] == 3 and config["slow_seconds"] == 30.0
    assert [chat(server.port, f"r{i}")[0] for i in range(4)] == [200, 200, 200, 429]
    status, _, stats = call(server.port, "GET", "/stats")
    assert status == 200 and stats["errors_by_code"] == {"1303": 1} and stats["requests"] == 4
    assert max_in_window(stats["request_starts"]) == 4
    assert call(server.port, "POST", "/reset-stats")[0] == 200
    assert server.stats()["requests"] == 0

    status, _, _ = call(server.port, "POST", "/control", {"rpm": None, "rates": {"503": 1.0}})
    assert status == 200
    assert [chat(server.port, f"s{i}")[0] for i in range(3)] == [503, 503, 503]
    status, _, body = call(server.port, "POST", "/control", {"bogus": 1})
    assert status == 400 and "bogus" in body["error"]["message"]
    status, _, _ = call(server.port, "POST", "/control", {"rates": {"nope": 0.5}})
    assert status == 400
    status, _, body = call(server.port, "POST", CHAT, {"messages": []})
    assert status == 400 and body["error"]["code"] == "1214"
    assert call(server.port, "GET", "/nowhere")[0] == 404


def test_slow_fault_and_abandoned_request(server: ZaiServer) -> None:
    server.configure(slow_seconds=0.2)
    status, _, body = chat(server.port, "FAIL=slow LABEL=late")
    assert status == 200 and body["choices"][0]["message"]["content"] == "late"
    server.configure(slow_seconds=5)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            call(
                server.port,
                "POST",
                CHAT,
                {"model": "m", "messages": [{"role": "user", "content": "FAIL=slow*"}]},
                conn=conn,
            )
    finally:
        conn.close()
    for _ in range(50):
        if server.stats()["abandoned"] == 1:
            break
        threading.Event().wait(0.02)
    stats = server.stats()
    assert stats["abandoned"] == 1 and stats["inflight"] == 0 and stats["successes"] == 1


def test_cli_prints_port_and_stops_on_sigterm() -> None:
    script = Path(__file__).with_name("zai_server.py")
    with subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--rates", '{"500": 0}', "--seed", "7"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("PORT ")
            port = int(line.split()[1])
            status, _, body = chat(port, "LABEL=cli")
            assert status == 200 and body["choices"][0]["message"]["content"] == "cli"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert proc.stdout.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
