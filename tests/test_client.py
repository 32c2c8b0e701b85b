"""Client.send: one attempt through an httpx.MockTransport becomes a Success or a Failure."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import sysconfig
import zipfile
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import zbatch
from zbatch.client import MAX_RETRY_AFTER, Client, parse_retry_after
from zbatch.errors import JobError
from zbatch.outcome import Failure, Scope, Success
from zbatch.providers import OPENAI, ZAI

KEY = "zk-unit-test-KEY.0123456789abcdef"
BASE = "https://api.example.test/api/paas/v4/"


def answer(
    content: Any = "Positive.",
    *,
    finish_reason: str = "stop",
    reasoning: str | None = None,
    usage: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "glm-4.6",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
    }
    if usage is not None:
        body["usage"] = usage
    body.update(top)
    return body


def send(
    handler: Any, body: dict[str, Any] | None = None, *, key: str | None = KEY, provider=ZAI
) -> Any:
    """Send one request through a Client whose transport is ``handler``; return the outcome."""

    async def main() -> Any:
        client = Client(
            base_url=BASE,
            api_key=key,
            timeout=5.0,
            max_connections=4,
            provider=provider,
            transport=httpx.MockTransport(handler),
        )
        try:
            payload = body or {"model": "glm-4.6", "messages": [{"role": "user", "content": "hi"}]}
            return await client.send(json.dumps(payload).encode())
        finally:
            await client.aclose()

    return anyio.run(main)


def reply(status: int, payload: Any = None, *, headers: dict[str, str] | None = None, raw=None):
    def handler(request: httpx.Request) -> httpx.Response:
        if raw is not None:
            return httpx.Response(status, content=raw, headers=headers)
        return httpx.Response(status, json=payload, headers=headers)

    return handler


# --- success --------------------------------------------------------------------------------


def test_a_200_answer_is_parsed_into_every_success_field():
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64},
    }
    payload = answer(
        "The sentiment is positive.",
        reasoning="The user is happy.",
        usage=usage,
        request_id="req-42",
    )
    outcome = send(reply(200, payload))
    assert isinstance(outcome, Success)
    assert outcome.content == "The sentiment is positive."
    assert outcome.reasoning_content == "The user is happy."
    assert outcome.finish_reason == "stop"
    assert outcome.model == "glm-4.6"
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.total_tokens) == (
        120,
        30,
        150,
    )
    assert outcome.cached_tokens == 64
    assert outcome.request_id == "req-42"
    assert outcome.latency_ms >= 0


def test_missing_usage_and_reasoning_become_none_not_zero():
    outcome = send(reply(200, answer("ok")))
    assert isinstance(outcome, Success)
    assert outcome.reasoning_content is None
    assert outcome.prompt_tokens is None
    assert outcome.completion_tokens is None
    assert outcome.total_tokens is None
    assert outcome.cached_tokens is None


def test_usage_without_prompt_tokens_details_has_no_cached_tokens():
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    outcome = send(reply(200, answer("ok", usage=usage)))
    assert isinstance(outcome, Success)
    assert outcome.prompt_tokens == 5
    assert outcome.cached_tokens is None


def test_request_id_falls_back_to_the_openai_style_id():
    outcome = send(reply(200, answer("ok")))  # no request_id field, only "id"
    assert isinstance(outcome, Success)
    assert outcome.request_id == "chatcmpl-1"


def test_finish_reason_length_is_still_a_success_with_the_partial_answer():
    outcome = send(reply(200, answer("The answer is cut of", finish_reason="length")))
    assert isinstance(outcome, Success)
    assert outcome.finish_reason == "length"
    assert outcome.content == "The answer is cut of"


def test_an_empty_string_content_is_an_empty_success():
    outcome = send(reply(200, answer("")))
    assert isinstance(outcome, Success)
    assert outcome.content == ""


def test_the_request_is_posted_to_chat_completions_with_the_key_and_the_body():
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["method"] = request.method
        seen["url"] = str(request.url)
        seen["auth"] = request.headers.get("authorization")
        seen["type"] = request.headers.get("content-type")
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json=answer("ok"))

    body = {"model": "glm-4.6", "messages": [{"role": "user", "content": "Say ok"}]}
    outcome = send(handler, body)
    assert isinstance(outcome, Success)
    assert seen["method"] == "POST"
    # The trailing slash of the base URL does not double up.
    assert seen["url"] == "https://api.example.test/api/paas/v4/chat/completions"
    assert seen["auth"] == f"Bearer {KEY}"
    assert seen["type"] == "application/json"
    assert seen["body"] == body


def test_without_a_key_no_authorization_header_is_sent():
    """Local OpenAI-compatible servers need no key; an empty "Bearer " would be wrong."""
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, json=answer("ok"))

    assert isinstance(send(handler, key=None), Success)
    assert seen["auth"] is None


# --- error answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind", "scope"),
    [
        (429, "1302", "rate_limited", Scope.SLOW_DOWN),
        (429, "1113", "fatal", Scope.FATAL),
        (429, "1304", "rate_limited", Scope.QUOTA),
        (401, "1001", "fatal", Scope.FATAL),
        (400, "1214", "bad_request", Scope.ROW),
        (400, "1301", "content_filter", Scope.ROW),
        (500, "500", "server_error", Scope.RETRY),
    ],
)
def test_an_error_body_becomes_a_failure_with_its_code_and_status(status, code, kind, scope):
    payload = {"error": {"code": code, "message": f"provider message for {code}"}}
    outcome = send(reply(status, payload))
    assert isinstance(outcome, Failure)
    assert outcome.error_type == kind
    assert outcome.scope is scope
    assert outcome.status_code == status
    assert outcome.error_code == code
    assert outcome.message == f"provider message for {code}"


def test_a_numeric_error_code_is_read_as_a_string():
    outcome = send(reply(429, {"error": {"code": 1302, "message": "busy"}}))
    assert isinstance(outcome, Failure)
    assert outcome.error_code == "1302"
    assert outcome.scope is Scope.SLOW_DOWN


def test_a_top_level_code_and_msg_body_is_understood():
    outcome = send(reply(429, {"code": 1305, "msg": "rate limit triggered"}))
    assert isinstance(outcome, Failure)
    assert outcome.error_code == "1305"
    assert outcome.message == "rate limit triggered"
    assert outcome.scope is Scope.RETRY


def test_a_non_json_error_body_keeps_its_text_and_is_classified_by_status():
    outcome = send(reply(502, raw=b"<html>Bad Gateway</html>"))
    assert isinstance(outcome, Failure)
    assert outcome.error_code is None
    assert outcome.scope is Scope.RETRY
    assert outcome.message == "<html>Bad Gateway</html>"


def test_an_empty_error_body_uses_the_reason_phrase():
    outcome = send(reply(503, raw=b""))
    assert isinstance(outcome, Failure)
    assert outcome.message == "Service Unavailable"
    assert outcome.retryable


def test_retry_after_in_seconds_is_carried_on_the_failure():
    payload = {"error": {"code": "1302", "message": "busy"}}
    outcome = send(reply(429, payload, headers={"Retry-After": "7"}))
    assert isinstance(outcome, Failure)
    assert outcome.retry_after == 7.0
    # The classification is kept when the retry_after is added.
    assert (outcome.scope, outcome.error_code, outcome.status_code) == (
        Scope.SLOW_DOWN,
        "1302",
        429,
    )


def test_retry_after_as_an_http_date_becomes_seconds_from_now():
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    header = format_datetime(when, usegmt=True)
    outcome = send(reply(503, raw=b"busy", headers={"Retry-After": header}))
    assert isinstance(outcome, Failure)
    assert outcome.retry_after is not None
    # HTTP dates have one-second resolution.
    assert 28.0 <= outcome.retry_after <= 30.5


def test_no_retry_after_header_means_none():
    outcome = send(reply(429, {"error": {"code": "1302", "message": "busy"}}))
    assert isinstance(outcome, Failure)
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        ("-3", 0.0),  # never a negative wait
        ("-inf", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        ("nan", None),
        # never an endless or absurd wait: capped
        ("inf", MAX_RETRY_AFTER),
        ("99999999", MAX_RETRY_AFTER),
        ("1e400", MAX_RETRY_AFTER),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("Mon, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
def test_parse_retry_after_accepts_seconds_and_dates_caps_them_and_ignores_garbage(value, expected):
    assert parse_retry_after(value) == expected


def test_an_error_that_is_only_a_message_keeps_the_message():
    outcome = send(reply(404, {"error": "model 'x' not found, try pulling it first"}))
    assert isinstance(outcome, Failure)
    assert (outcome.message, outcome.error_code) == (
        "model 'x' not found, try pulling it first",
        None,
    )


def test_error_details_of_a_plain_text_body():
    assert ZAI.error_details(b"  upstream timed out \n") == (None, "upstream timed out")


# --- unusable 200 answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"not json at all", b'{"choices": []}', b'{"id": "x"}', b"[1, 2]", b'{"choices": [5]}'],
)
def test_an_unusable_200_is_a_retryable_invalid_response(raw):
    outcome = send(reply(200, raw=raw))
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "invalid_response"
    assert outcome.scope is Scope.RETRY
    assert outcome.retryable
    assert outcome.status_code == 200
    assert "unusable 200 answer" in outcome.message


def test_finish_reason_sensitive_is_a_content_filter_row_failure():
    outcome = send(reply(200, answer("", finish_reason="sensitive")))
    assert isinstance(outcome, Failure)
    assert (outcome.error_type, outcome.scope) == ("content_filter", Scope.ROW)
    assert not outcome.retryable


def test_finish_reason_network_error_is_a_retryable_server_error():
    outcome = send(reply(200, answer("", finish_reason="network_error")))
    assert isinstance(outcome, Failure)
    assert outcome.error_type == "server_error"
    assert outcome.scope is Scope.RETRY


def test_parse_answer_is_usable_without_a_client():
    outcome = ZAI.parse_answer(json.dumps(answer("direct")).encode(), 12)
    assert isinstance(outcome, Success)
    assert (outcome.content, outcome.latency_ms) == ("direct", 12)


# --- transport failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "text", "error_type"),
    [
        (httpx.ConnectError, "connection refused", "connection"),
        (httpx.ReadTimeout, "timed out reading", "timeout"),
        (httpx.RemoteProtocolError, "peer closed connection", "connection"),  # a dropped one
    ],
)
def test_a_transport_error_is_a_retryable_failure_naming_it(error, text, error_type):
    def handler(request: httpx.Request) -> httpx.Response:
        raise error(text, request=request)

    outcome = send(handler)
    assert isinstance(outcome, Failure)
    assert outcome.error_type == error_type
    assert outcome.scope is Scope.RETRY
    assert outcome.status_code is None
    assert error.__name__ in outcome.message
    assert text in outcome.message


# --- the key never leaks --------------------------------------------------------------------


def echo_key(status: int, *, as_json: bool):
    """A server that echoes the Authorization header back in its error text."""

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        text = f"invalid key {auth[len('Bearer ') :]} (header: {auth})"
        if as_json:
            return httpx.Response(status, json={"error": {"code": "1002", "message": text}})
        return httpx.Response(status, content=text.encode())

    return handler


@pytest.mark.parametrize(
    ("status", "as_json"), [(401, True), (401, False), (500, False), (200, False)]
)
def test_the_key_never_appears_in_a_failure_message_even_if_the_server_echoes_it(status, as_json):
    outcome = send(echo_key(status, as_json=as_json))
    assert isinstance(outcome, Failure)
    assert KEY not in outcome.message
    assert KEY not in repr(outcome)
    assert "[redacted]" in outcome.message


def test_the_key_is_redacted_from_transport_error_messages():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused {request.headers['authorization']}")

    outcome = send(handler)
    assert isinstance(outcome, Failure)
    assert KEY not in outcome.message
    assert "[redacted]" in outcome.message


@pytest.mark.parametrize(("status", "cut"), [(502, 300), (200, 200)])
def test_no_prefix_of_the_key_survives_where_the_quoted_body_is_cut(status, cut):
    """The body is cut before it is quoted; a key straddling the cut must not leave a prefix."""
    raw = ("x" * (cut - 10) + KEY + " trailing").encode()
    outcome = send(reply(status, raw=raw))
    assert isinstance(outcome, Failure)
    assert KEY[:8] not in outcome.message
    assert "[redacted]" in outcome.message


def test_a_successful_answer_is_unchanged_by_the_key_scrubbing():
    outcome = send(reply(200, answer("Paris, with zk-unrelated text")))
    assert isinstance(outcome, Success)
    assert outcome.content == "Paris, with zk-unrelated text"


def test_a_gzip_encoded_answer_is_decoded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert "gzip" in request.headers["accept-encoding"]
        packed = gzip.compress(json.dumps(answer("Negative.")).encode())
        return httpx.Response(200, content=packed, headers={"Content-Encoding": "gzip"})

    outcome = send(handler)
    assert isinstance(outcome, Success)
    assert outcome.content == "Negative."


def test_requests_carry_the_key_and_json_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer())

    send(handler)
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.example.test/api/paas/v4/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("zbatch/")


def test_requests_are_what_httpx_would_build_from_the_body() -> None:
    """The client builds its requests from precomputed parts; they match httpx's own
    Request(content=...) header for header, in order, with the body readable."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer())

    body = {"model": "glm-4.6", "messages": [{"role": "user", "content": "é 漢字"}]}
    send(handler, body)
    [request] = seen
    own = [(k, v) for k, v in request.headers.raw if k not in (b"Host", b"Content-Length")]
    expected = httpx.Request("POST", request.url, headers=own, content=request.content)
    assert request.headers.raw == expected.headers.raw
    assert request.headers.raw[0] == (b"Host", b"api.example.test")
    assert request.headers["content-length"] == str(len(json.dumps(body).encode()))
    assert json.loads(request.content) == body
    assert request.extensions["timeout"]["total"] == 5.0


# --- construction ---------------------------------------------------------------------------


def test_a_base_url_httpx_cannot_parse_is_a_job_error():
    with pytest.raises(JobError, match="base_url is not a usable URL"):
        Client(base_url="http://[::1", api_key=KEY, timeout=5, max_connections=1, provider=ZAI)


def test_an_openai_compatible_client_classifies_by_status_not_by_z_ai_codes():
    """On an OpenAI-compatible server, a 429 is "slow down" whatever code the body names."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(429, json={"error": {"code": "1113", "message": "busy"}})

    outcome = send(handler, provider=OPENAI)
    assert isinstance(outcome, Failure)
    assert (outcome.scope, outcome.error_code) == (Scope.SLOW_DOWN, "1113")
    assert seen == ["https://api.example.test/api/paas/v4/chat/completions"]


# The client run from a zip of the package, with every installed distribution but zbatch's.
NO_METADATA = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import anyio, httpx, zbatch
from zbatch.client import Client
from zbatch.providers import ZAI
assert zbatch.__file__.startswith(sys.argv[1]), zbatch.__file__

async def main():
    seen = []
    def handler(request):
        seen.append(request.headers["user-agent"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})
    client = Client(base_url="http://x.test/v1", api_key=None, timeout=5, max_connections=1,
                    provider=ZAI, transport=httpx.MockTransport(handler))
    outcome = await client.send(b"{}")
    print(seen[0], outcome.content)

anyio.run(main)
"""


def test_the_client_works_from_a_zip_without_installed_metadata(tmp_path: Path) -> None:
    """Spark --py-files and source trees have no dist-info: the User-Agent does not need it
    (it names the version written in the code)."""
    package = Path(zbatch.__file__).parent
    archive = tmp_path / "zbatch.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in package.rglob("*.py"):
            zipped.write(path, path.relative_to(package.parent))
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("zbatch", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", NO_METADATA, str(archive), str(deps)],
        cwd=tmp_path,  # the source tree holds zbatch.egg-info
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"zbatch/{zbatch.__version__}", "ok"]
