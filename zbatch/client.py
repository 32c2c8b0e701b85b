"""The HTTP client: one attempt at one request becomes a :class:`Success` or a :class:`Failure`.

Nothing here raises for a failed request; every way an attempt can go wrong
(transport error, timeout, error body, unusable 200) is classified into a
Failure so the runner can decide what to do.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from . import __version__
from .errors import Failure, Scope, classify, redact
from .transport import AiohttpTransport, env_proxy


@dataclass(frozen=True, slots=True)
class Success:
    """A usable answer."""

    content: str
    reasoning_content: str | None
    finish_reason: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    request_id: str | None
    latency_ms: int | None  # None for Batch API answers: no attempt was timed


Outcome = Success | Failure


class Client:
    """Sends chat completion requests straight to one shared httpx transport.

    The default transport is zbatch's :class:`~zbatch.transport.AiohttpTransport`, through
    the proxy the environment names (looked up once). ``transport`` is injectable: tests
    pass an ``httpx.MockTransport``, ``--simulate`` passes the simulated endpoint.

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key or ""
        self._url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
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
        self._headers = headers
        timeouts = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._extensions = {"timeout": timeouts.as_dict()}
        self._transport = transport or AiohttpTransport(
            max_connections=max_connections, proxy=env_proxy(self._url)
        )

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def send(self, body: bytes) -> Outcome:
        """One attempt: POST the body, classify what comes back."""
        started = time.monotonic()
        request = httpx.Request(
            "POST", self._url, headers=self._headers, content=body, extensions=self._extensions
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            return self._transport_failure(exc)
        latency_ms = int((time.monotonic() - started) * 1000)
        # A body may echo the key; cut it out before any part of the body is quoted.
        raw = self._scrub(content)
        if response.status_code != 200:
            return self._error(response, raw)
        outcome = parse_answer(raw, latency_ms)
        if isinstance(outcome, Failure):  # its message may quote the body
            return replace(outcome, message=redact(outcome.message, self._api_key))
        return outcome

    def _scrub(self, raw: bytes) -> bytes:
        """The body with the whole key replaced, so no truncation can leave a prefix of it."""
        return raw.replace(self._api_key.encode(), b"[redacted]") if self._api_key else raw

    def _error(self, response: httpx.Response, raw: bytes) -> Failure:
        code, message = error_details(raw)
        message = redact(message or response.reason_phrase or "", self._api_key)
        failure = classify(response.status_code, code, message)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return failure
        return replace(failure, retry_after=retry_after)

    def _transport_failure(self, exc: httpx.TransportError) -> Failure:
        message = redact(f"{type(exc).__name__}: {exc}", self._api_key)
        if isinstance(exc, httpx.TimeoutException):
            return Failure("timeout", Scope.RETRY, message or "request timed out")
        return Failure("connection", Scope.RETRY, message)


def parse_answer(raw: bytes, latency_ms: int | None) -> Outcome:
    """Turn a 200 body into a Success, or a Failure when it is unusable."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        finish_reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        snippet = raw[:200].decode("utf-8", "replace")
        return Failure("invalid_response", Scope.RETRY, f"unusable 200 answer: {snippet}", 200)
    if finish_reason == "sensitive":
        return Failure("content_filter", Scope.ROW, "blocked by the content filter", 200)
    if finish_reason == "network_error":
        return Failure("server_error", Scope.RETRY, "inference failed (network_error)", 200)
    content = message.get("content")
    if not isinstance(content, str):
        content = "" if content is None else json.dumps(content)
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Success(
        content=content,
        reasoning_content=message.get("reasoning_content"),
        finish_reason=finish_reason,
        model=data.get("model"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        total_tokens=usage.get("total_tokens"),
        cached_tokens=details.get("cached_tokens"),
        request_id=data.get("request_id") or data.get("id"),
        latency_ms=latency_ms,
    )


def error_details(raw: bytes) -> tuple[str | None, str]:
    """The provider's business code and message from an error body, if it has them."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None, raw[:300].decode("utf-8", "replace").strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (str(code) if code is not None else None), str(error.get("message") or "")
    if isinstance(data, dict) and "code" in data:
        return str(data["code"]), str(data.get("msg") or data.get("message") or "")
    return None, raw[:300].decode("utf-8", "replace").strip()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
