"""The provider's Batch API over HTTP: files and batches, with retries and clear failures.

    api = BatchApi(job.profile, base_url=job.base_url, api_key=key, timeout=job.timeout)
    uploaded = await api.upload(path, name)            # POST /files (multipart, purpose=batch)
    batch = await api.create(uploaded.id, endpoint="/v4/chat/completions", metadata={})
    batch = await api.get(batch.id)                    # status, request_counts
    await api.download(batch.output_file_id, target)   # streamed to disk

Every call retries transient failures (connection, timeout, 5xx, 429 "slow down") with
exponential backoff and full jitter. What cannot be retried becomes an exception a user can
act on: the account (401, 1113 no balance, ...) or a file the provider refuses (1210 model not
open to batches, 413 too big) is a :class:`FatalApiError` (exit 3); a base URL without a Batch
API (404 or 1222 on /files or /batches) is a :class:`JobError` (exit 2), before anything was
submitted. Nothing here touches the output directory.

Creating a batch is never re-sent on a guess: a create that may have reached the provider
without its answer reaching zbatch (a reset or timed-out connection, a 5xx, an unreadable
answer) raises :class:`CreateUnconfirmed`, and the caller looks the batch up
(:meth:`BatchApi.find_batch`) before creating again. A provider whose ``GET /batches`` does
not exist raises :class:`NoListing` there.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx

from ..client import error_failure, scrub, transport_failure
from ..errors import EndpointDown, FatalApiError, JobError, QuotaReached, RunStopped
from ..limits import Backoff
from ..outcome import Failure, Scope
from ..providers import Provider

_T = TypeVar("_T")
DOWNLOAD_CHUNK = 1 << 20
TOKEN_KEY = "zbatch_token"  # the batch metadata key of the client token of a submission
NO_BATCH_API = (
    "{url} has no Batch API ({detail}); use --mode online or a base URL that has one "
    "(e.g. https://open.bigmodel.cn/api/paas/v4)"
)
# Routes whose 404 means "no such API" rather than "no such object".
_API_ROUTES = frozenset({"upload", "create"})
# Listings a provider may lack although it has a Batch API.
_LISTINGS = frozenset({"list", "list_files"})
# Failures that prove a request never left: creating again after one cannot make a second batch.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers that say a route does not exist (Z.AI answers 1222 "This API does not exist").
_NO_ROUTE = frozenset({404, 405, 501})


class CreateUnconfirmed(Exception):
    """``POST /batches`` may have created a batch, but its answer was lost."""


class NoListing(Exception):
    """The provider has no ``GET /batches`` (a batch cannot be found by its file or token) or
    no ``GET /files``."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file the provider holds."""

    id: str
    bytes: int | None
    filename: str | None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the provider says about one batch."""

    id: str
    status: str
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    created_at: int | None
    metadata: dict[str, Any]
    errors: str | None  # the provider's validation errors, as text

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchInfo:
        counts = data.get("request_counts") or {}
        problems = data.get("errors") or {}
        details = problems.get("data") if isinstance(problems, dict) else None
        text = "; ".join(
            f"{item.get('code')}: {item.get('message')}"
            for item in details or []
            if isinstance(item, dict)
        )
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or "unknown"),
            input_file_id=data.get("input_file_id"),
            output_file_id=data.get("output_file_id") or None,
            error_file_id=data.get("error_file_id") or None,
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            created_at=data.get("created_at"),
            metadata=data.get("metadata") or {},
            errors=text or None,
        )


class BatchApi:
    """One provider's Batch API; ``transport`` is injectable (tests, --simulate). Errors are
    classified with the provider's code table, as live answers are."""

    def __init__(
        self,
        provider: Provider,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        max_retries: int = 8,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._provider = provider
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key or ""
        headers = {"User-Agent": f"zbatch/{version('zbatch')}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=self._base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )
        self._max_retries = max_retries
        self._backoff = backoff or Backoff()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def upload(self, path: Path, filename: str) -> UploadedFile:
        """POST /files: the file at ``path``, streamed from disk, under ``filename``."""

        async def send() -> httpx.Response:
            with path.open("rb") as handle:
                files = {"file": (filename, handle, "application/jsonl")}
                return await self._client.post("files", files=files, data={"purpose": "batch"})

        data = await self._call("upload", send)
        return UploadedFile(str(data["id"]), data.get("bytes"), data.get("filename"))

    async def find_file(self, filename: str) -> UploadedFile | None:
        """The batch file the provider holds under ``filename`` (an upload cut off by a crash);
        :class:`NoListing` if the provider cannot list its files."""
        data = await self._call(
            "list_files", lambda: self._client.get("files", params={"purpose": "batch"})
        )
        for item in data.get("data") or []:
            if isinstance(item, dict) and item.get("filename") == filename:
                return UploadedFile(str(item["id"]), item.get("bytes"), filename)
        return None

    async def create(
        self,
        input_file_id: str,
        *,
        endpoint: str,
        metadata: dict[str, str],
        completion_window: str | None = None,
    ) -> BatchInfo:
        """POST /batches for an uploaded file; the provider deletes the file when done."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "auto_delete_input_file": True,
            "metadata": metadata,
        }
        if completion_window is not None:
            body["completion_window"] = completion_window
        data = await self._call("create", lambda: self._client.post("batches", json=body))
        return BatchInfo.from_json(data)

    async def get(self, batch_id: str) -> BatchInfo:
        data = await self._call("get", lambda: self._client.get(f"batches/{batch_id}"))
        return BatchInfo.from_json(data)

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self._call("cancel", lambda: self._client.post(f"batches/{batch_id}/cancel"))
        return BatchInfo.from_json(data)

    async def find_batch(
        self, input_file_id: str, *, token: str | None = None, page: int = 100
    ) -> BatchInfo | None:
        """The batch made from ``input_file_id`` or carrying ``token`` in its metadata
        (a create whose answer was lost, or cut off by a crash), or None.

        Pages through GET /batches, newest first; :class:`NoListing` if there is none.
        """
        params: dict[str, str | int] = {"limit": page}
        while True:
            data = await self._call(
                "list", functools.partial(self._client.get, "batches", params=dict(params))
            )
            items = [item for item in data.get("data") or [] if isinstance(item, dict)]
            for item in items:
                metadata = item.get("metadata")
                tagged = metadata.get(TOKEN_KEY) if isinstance(metadata, dict) else None
                if item.get("input_file_id") == input_file_id or (
                    token is not None and tagged == token
                ):
                    return BatchInfo.from_json(item)
            if not data.get("has_more") or not items:
                return None
            params["after"] = str(items[-1]["id"])

    async def download(self, file_id: str, target: Path) -> int:
        """GET /files/{id}/content streamed into ``target`` (written whole or not at all)."""
        partial = target.with_name(target.name + ".part")

        async def fetch() -> httpx.Response:
            size = 0
            async with self._client.stream("GET", f"files/{file_id}/content") as response:
                if response.status_code != 200:
                    await response.aread()
                    return response
                with partial.open("wb") as handle:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                        handle.write(chunk)
                        size += len(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
            partial.replace(target)
            # The body went to disk; answer the call with its size only.
            return httpx.Response(200, json={"bytes": size})

        data = await self._call("content", fetch)
        return int(data["bytes"])

    async def delete_file(self, file_id: str) -> None:
        """DELETE /files/{id}; a file already gone is fine."""
        await self._call("delete", lambda: self._client.delete(f"files/{file_id}"))

    # -- the one place requests are sent, retried and judged

    async def _call(
        self, route: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            failure = await self._attempt(route, send)
            if isinstance(failure, dict):
                return failure
            if not failure.retryable:
                raise self._stop(route, failure)
            if attempt >= self._max_retries:
                raise EndpointDown(
                    f"the Batch API at {self._base_url} kept failing ({route}): "
                    f"{failure.message}; run the same command again when it is back"
                )
            await anyio.sleep(self._backoff.delay(attempt, failure.retry_after))
            attempt += 1

    async def _attempt(
        self, route: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> dict[str, Any] | Failure:
        try:
            response = await send()
        except httpx.TransportError as exc:
            failure = transport_failure(exc, self._api_key)
            if route == "create" and not isinstance(exc, _NOT_SENT):
                raise CreateUnconfirmed(failure.message) from None
            return failure
        raw = scrub(response.content, self._api_key)
        if route == "create" and (response.status_code >= 500 or response.status_code == 200):
            try:
                return self._created(response.status_code, raw)
            except ValueError:
                raise CreateUnconfirmed(_said(response, raw)) from None
        if route in _LISTINGS and response.status_code in _NO_ROUTE:
            raise NoListing(_said(response, raw))
        if response.status_code == 200:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict):
                return data
            snippet = raw[:200].decode("utf-8", "replace")
            return Failure("invalid_response", Scope.RETRY, f"unusable answer: {snippet}", 200)
        if route == "delete" and response.status_code == 404:
            return {}  # already gone: what deleting wanted
        failure = error_failure(self._provider, response, raw, self._api_key)
        code = failure.error_code
        if route in _LISTINGS and code == "1222":
            raise NoListing(_said(response, raw))
        if code == "1222" or (response.status_code == 404 and route in _API_ROUTES):
            detail = f"HTTP {response.status_code}" + (f", code {code}" if code else "")
            raise JobError(NO_BATCH_API.format(url=self._base_url, detail=detail))
        return failure

    @staticmethod
    def _created(status: int, raw: bytes) -> dict[str, Any]:
        """The batch a create's answer names; ValueError when it names none (it may exist)."""
        data = json.loads(raw) if status == 200 else None
        if not (isinstance(data, dict) and data.get("id")):
            raise ValueError("no batch in the answer")
        return data

    def _stop(self, route: str, failure: Failure) -> RunStopped:
        """The exception for a failure that retrying cannot fix."""
        said = f"HTTP {failure.status_code}" + (
            f", code {failure.error_code}" if failure.error_code else ""
        )
        where = f"the Batch API refused {_ACTIONS.get(route, route)} ({said}: {failure.message})"
        if failure.scope is Scope.QUOTA:
            return QuotaReached(f"{where}; run the same command after the quota resets")
        if failure.scope is Scope.FATAL:
            hint = self._provider.fatal_hint(failure)
        else:
            hint = _refusal_hint(failure)
        return FatalApiError(f"{where}; {hint}")


_ACTIONS = {
    "upload": "the batch file upload",
    "list_files": "listing files",
    "content": "a file download",
    "delete": "deleting a file",
    "create": "creating the batch",
    "get": "reading a batch",
    "list": "listing batches",
    "cancel": "cancelling a batch",
}


def _said(response: httpx.Response, raw: bytes) -> str:
    return f"HTTP {response.status_code}: {raw[:200].decode('utf-8', 'replace').strip()}"


def _refusal_hint(failure: Failure) -> str:
    """What to do when the provider refuses a batch file or a batch object."""
    if failure.status_code == 413:
        return "the file is too big: lower [run] batch_max_bytes, then run the same command"
    if failure.error_code in ("1210", "1211"):
        return (
            "the model may not be open to the Batch API: pick a model from the provider's "
            "batch list (or use --mode online), then run the same command"
        )
    if failure.status_code == 404:
        return "check base_url and the API key (the batch belongs to the account that made it)"
    return "fix the request settings it names, then run the same command"
