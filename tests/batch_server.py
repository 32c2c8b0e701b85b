"""Fake provider Batch API on 127.0.0.1, for zbatch's batch-mode tests.

It speaks the Zhipu / OpenAI batch protocol: ``POST /files`` (multipart, ``purpose=batch``),
``GET /files``, ``GET /files/{id}/content``, ``DELETE /files/{id}``, ``POST /batches``,
``GET /batches/{id}``, ``POST /batches/{id}/cancel`` and ``GET /batches?after&limit``, all
under ``/api/paas/v4`` like the live API. ``POST .../chat/completions`` answers live too, so
one server serves a job run live, in batch mode, or both (``--finish-online``).

Every line of a batch is answered by the engine of tests/zai_server.py, exactly as a live
request with the same body would be: the answer is the pure function of the prompt that
tests check (``answer_for``), and ``FAIL=`` directives in a prompt give that line an error
response (which goes to the batch's error file).

Batches move only when the test says so, never by the clock: ``advance="poll"`` moves a batch
one status on every ``GET /batches/{id}`` (validating -> in_progress -> finalizing ->
completed), ``advance="manual"`` moves them only on :meth:`BatchServer.step`.

Injectable faults: :meth:`BatchServer.inject` (an error answer on a route, N times),
``no_batch_api`` ("404" or "1222" on /files and /batches), :meth:`expire_next` (the next
batch expires after N lines), :meth:`fail_next_validation`, ``models`` (the models the
batch list allows: others are refused at upload with 1210), custom_ids shorter than 6
characters refused at upload with 1214, ``max_lines`` / ``max_bytes`` per file (413).
Lost and late answers, for exactly-once submission: :meth:`BatchServer.lose_create` (the
next create makes the batch, then resets the connection or answers 502), ``list_lag`` (a new
batch shows in ``GET /batches`` only after that many listings) and ``no_listing`` (``GET
/batches`` and ``GET /files`` answer 404, like a provider without listings).

The server records every custom_id of every batch it created (``submitted``), every upload
and every deleted file, so tests can assert exactly-once submission and no re-upload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import itertools
import json
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import Any, TypeVar

from zai_server import BASE_PATH, HOST, Settings, _Engine, _Request, http_status_for

from zbatch.testing import multipart_fields

ENDPOINTS = ("/v4/chat/completions", "/v1/chat/completions")
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
MAX_LINES = 50_000
T = TypeVar("T")
MAX_BYTES = 100 * 1024 * 1024
ROUTES = frozenset(
    {"upload", "list_files", "content", "delete", "create", "get", "list", "cancel", "chat"}
)


@dataclasses.dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    lines: list[dict[str, Any]] | None = None  # parsed at upload (batch input files)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "filename": self.filename,
            "purpose": self.purpose,
            "created_at": self.created_at,
        }


@dataclasses.dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any] | None
    auto_delete: bool
    completion_window: str | None
    lines: list[dict[str, Any]]
    created_at: int
    status: str = "validating"
    processed: int = 0
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    expire_after: int | None = None
    fail_validation: str | None = None
    failure: dict[str, Any] | None = None
    stamps: dict[str, int] = dataclasses.field(default_factory=dict)
    unlisted: int = 0  # listings still to come before this batch shows in them (list_lag)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            **{f"{name}_at": stamp for name, stamp in self.stamps.items()},
            "request_counts": {
                "total": len(self.lines) if self.status != "validating" else 0,
                "completed": len(self.outputs),
                "failed": len(self.errors),
            },
            "metadata": self.metadata,
            "errors": self.failure,
        }


class _Reset(Exception):
    """Close the connection without an answer (the request's effect stays)."""


class _Fault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _error(code: str, message: str, status: int | None = None) -> _Fault:
    return _Fault(status or http_status_for(code), code, message)


def _found(records: dict[str, T], kind: str, key: str) -> T:
    """The record ``key`` names, or the provider's 404."""
    record = records.get(key)
    if record is None:
        raise _Fault(404, "404", f"no {kind} {key}")
    return record


class _State:
    """Everything the server knows; guarded by ``lock`` (the HTTP server is threaded)."""

    def __init__(self, **options: Any) -> None:
        self.lock = threading.RLock()
        self.advance: str = options.pop("advance", "poll")
        self.models: frozenset[str] | None = options.pop("models", None)
        self.require_key: str | None = options.pop("require_key", None)
        self.require_window: bool = options.pop("require_completion_window", False)
        self.no_batch_api: str | None = options.pop("no_batch_api", None)
        self.max_lines: int = options.pop("max_lines", MAX_LINES)
        self.max_bytes: int = options.pop("max_bytes", MAX_BYTES)
        self.lines_per_step: int | None = options.pop("lines_per_step", None)
        self.list_lag: int = options.pop("list_lag", 0)
        self.no_listing: bool = options.pop("no_listing", False)
        self.lost_creates: list[str] = []  # "reset" / "502", one per create to lose
        self.rng = random.Random(options.pop("seed", 0))
        if options:
            raise TypeError(f"unknown option(s): {', '.join(sorted(options))}")
        self.engine = _Engine(Settings())
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.faults: dict[str, list[tuple[int, str]]] = {}
        self.next_expire: int | None = None
        self.next_validation_failure: str | None = None
        self.serial = itertools.count(1)
        # Records for the tests' assertions.
        self.submitted: Counter[str] = Counter()
        self.uploads: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.requests: Counter[str] = Counter()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.serial):06d}"

    def take_fault(self, route: str) -> None:
        queue = self.faults.get(route)
        if queue:
            status, code = queue.pop(0)
            raise _Fault(status, code, f"injected failure {code} on {route}")

    # -- files

    def upload(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose != "batch":
            raise _error("1214", f"purpose must be 'batch', not {purpose!r}")
        if len(data) > self.max_bytes:
            raise _Fault(413, "413", f"file is {len(data)} bytes, more than {self.max_bytes}")
        lines = _parse_lines(data)
        if len(lines) > self.max_lines:
            raise _error("1214", f"file has {len(lines)} lines, more than {self.max_lines}")
        seen: set[str] = set()
        models = set()
        for number, line in enumerate(lines, 1):
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or len(custom_id) < 6:
                raise _error("1214", f"line {number}: custom_id must be at least 6 characters")
            if custom_id in seen:
                raise _error("1214", f"line {number}: custom_id {custom_id!r} is repeated")
            seen.add(custom_id)
            body = line.get("body")
            model = body.get("model") if isinstance(body, dict) else None
            models.add(model)
            if self.models is not None and model not in self.models:
                raise _error("1210", f"line {number}: model {model!r} is not open to batches")
        if len(models) > 1:
            raise _error("1214", "a batch file may hold only one model")
        record = _File(self.new_id("file"), filename, purpose, data, int(time.time()), lines)
        self.files[record.id] = record
        self.uploads.append({"id": record.id, "filename": filename, "lines": len(lines)})
        return record.as_json()

    def file(self, file_id: str) -> _File:
        return _found(self.files, "file", file_id)

    def delete(self, file_id: str) -> dict[str, Any]:
        self.file(file_id)
        del self.files[file_id]
        self.deleted.append(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint = request.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise _error("1214", f"endpoint must be one of {', '.join(ENDPOINTS)}")
        window = request.get("completion_window")
        if self.require_window and window != "24h":
            raise _error("1214", 'completion_window must be "24h"')
        source = self.file(str(request.get("input_file_id")))
        batch = _Batch(
            id=self.new_id("batch"),
            input_file_id=source.id,
            endpoint=endpoint,
            metadata=request.get("metadata"),
            auto_delete=bool(request.get("auto_delete_input_file", False)),
            completion_window=window,
            lines=source.lines if source.lines is not None else _parse_lines(source.data),
            created_at=int(time.time()),
            expire_after=self.next_expire,
            fail_validation=self.next_validation_failure,
            unlisted=self.list_lag,
        )
        self.next_expire = self.next_validation_failure = None
        self.batches[batch.id] = batch
        self.submitted.update(line["custom_id"] for line in batch.lines)
        return batch.as_json()

    def batch(self, batch_id: str) -> _Batch:
        return _found(self.batches, "batch", batch_id)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self.batch(batch_id)
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status = "cancelling"
            batch.stamps["cancelling"] = int(time.time())
        return batch.as_json()

    def listing(self, after: str | None, limit: int) -> dict[str, Any]:
        # Newest first, like the providers.
        ordered = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        for hidden in [b for b in ordered if b.unlisted > 0]:
            hidden.unlisted -= 1
            ordered.remove(hidden)
        if after is not None:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        page = ordered[:limit]
        return {
            "object": "list",
            "data": [b.as_json() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(ordered) > limit,
        }

    def step(self, batch: _Batch) -> None:
        """Move one batch one status forward."""
        if batch.status == "validating":
            if batch.fail_validation is not None:
                batch.failure = {
                    "object": "list",
                    "data": [{"code": "1214", "message": batch.fail_validation, "line": 1}],
                }
                self.finish(batch, "failed")
            else:
                batch.status = "in_progress"
                batch.stamps["in_progress"] = int(time.time())
        elif batch.status == "in_progress":
            count = self.lines_per_step or len(batch.lines)
            for line in batch.lines[batch.processed : batch.processed + count]:
                self.answer(batch, line)
                batch.processed += 1
                if batch.expire_after is not None and batch.processed >= batch.expire_after:
                    self.finish(batch, "expired")
                    return
            if batch.processed == len(batch.lines):
                batch.status = "finalizing"
                batch.stamps["finalizing"] = int(time.time())
        elif batch.status == "finalizing":
            self.finish(batch, "completed")
        elif batch.status == "cancelling":
            self.finish(batch, "cancelled")

    def answer(self, batch: _Batch, line: dict[str, Any]) -> None:
        custom_id = line.get("custom_id")
        answer_id = self.new_id("resp")
        if line.get("method") != "POST" or line.get("url") != batch.endpoint:
            message = f"line url must be {batch.endpoint} with method POST"
            batch.errors.append(
                {
                    "id": answer_id,
                    "custom_id": custom_id,
                    "response": None,
                    "error": {"code": "1214", "message": message},
                }
            )
            return
        raw = json.dumps(line.get("body")).encode()
        request = _Request("POST", BASE_PATH + "/chat/completions", {}, True, False, len(raw), raw)
        reply = self.engine.handle(request)
        self.engine.finished(reply, delivered=True)
        if reply.abort:  # a connection reset has no answer in a batch: an internal error
            status, body = 500, {"error": {"code": "500", "message": "Internal error"}}
        else:
            status, body = reply.status, json.loads(reply.body)
        out = {"id": answer_id, "custom_id": custom_id, "response": {"status_code": status}}
        out["response"]["body"] = body
        out["response"]["request_id"] = answer_id
        (batch.outputs if status == 200 else batch.errors).append(out)

    def finish(self, batch: _Batch, status: str) -> None:
        batch.status = status
        batch.stamps[status] = int(time.time())
        for lines, field in ((batch.outputs, "output_file_id"), (batch.errors, "error_file_id")):
            if lines:
                shuffled = list(lines)
                self.rng.shuffle(shuffled)
                data = b"".join(
                    json.dumps(item, ensure_ascii=False).encode() + b"\n" for item in shuffled
                )
                name = f"{batch.id}-{field}.jsonl"
                record = _File(self.new_id("file"), name, "batch_output", data, int(time.time()))
                self.files[record.id] = record
                setattr(batch, field, record.id)
        if batch.auto_delete and batch.input_file_id in self.files:
            self.delete(batch.input_file_id)


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise _error("1214", f"line {number} is not JSON") from None
        if not isinstance(line, dict):
            raise _error("1214", f"line {number} is not a JSON object")
        lines.append(line)
    return lines


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the records instead

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self._body()
        state = self.state
        with state.lock:
            try:
                status, payload = self._route(method, url.path, query, body)
            except _Fault as fault:
                status = fault.status
                payload = {"error": {"code": fault.code, "message": str(fault)}}
            except _Reset:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        if isinstance(payload, bytes):
            self._send(status, payload, "application/octet-stream")
        else:
            self._send(status, json.dumps(payload, ensure_ascii=False).encode())

    def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        state = self.state
        if not path.startswith(BASE_PATH + "/"):
            raise _Fault(404, "404", f"no route for {method} {path}")
        parts = path[len(BASE_PATH) + 1 :].split("/")
        route = _route_name(method, parts)
        if route is None:
            raise _Fault(404, "404", f"no route for {method} {path}")
        state.requests[route] += 1
        key = state.require_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            raise _error("1001", "Authorization parameter not received or invalid")
        if route == "chat":
            raw = body
            request = _Request("POST", path, {}, True, False, len(raw), raw)
            reply = state.engine.handle(request)
            state.engine.finished(reply, delivered=True)
            return reply.status, json.loads(reply.body or b"{}")
        if state.no_batch_api is not None:
            if state.no_batch_api == "1222":
                raise _error("1222", "This API does not exist")
            raise _Fault(404, "404", f"no route for {method} {path}")
        state.take_fault(route)
        if route == "upload":
            try:
                fields = multipart_fields(self.headers.get("Content-Type", ""), body)
            except ValueError as exc:
                raise _Fault(400, "1214", str(exc)) from None
            filename, data = fields.get("file", (None, b""))
            purpose = fields.get("purpose", (None, b""))[1].decode()
            return 200, state.upload(filename or "upload.jsonl", purpose, data)
        if route == "list_files":
            if state.no_listing:
                raise _Fault(404, "404", f"no route for {method} {path}")
            files = [f.as_json() for f in state.files.values() if f.purpose == "batch"]
            return 200, {"object": "list", "data": files}
        if route == "content":
            return 200, state.file(parts[1]).data
        if route == "delete":
            return 200, state.delete(parts[1])
        if route == "create":
            created = state.create(json.loads(body))
            if state.lost_creates:  # made, but its answer never arrives
                if state.lost_creates.pop(0) == "reset":
                    raise _Reset
                raise _Fault(502, "502", "Bad Gateway")
            return 200, created
        if route == "list":
            if state.no_listing:
                raise _Fault(404, "404", f"no route for {method} {path}")
            return 200, state.listing(query.get("after"), int(query.get("limit", "20")))
        batch = state.batch(parts[1])
        if route == "cancel":
            return 200, state.cancel(batch.id)
        if state.advance == "poll":
            state.step(batch)
        return 200, batch.as_json()


def _route_name(method: str, parts: list[str]) -> str | None:
    shape = (method, parts[0], len(parts))
    routes = {
        ("POST", "chat", 2): "chat",
        ("POST", "files", 1): "upload",
        ("GET", "files", 1): "list_files",
        ("GET", "files", 3): "content",
        ("DELETE", "files", 2): "delete",
        ("POST", "batches", 1): "create",
        ("GET", "batches", 1): "list",
        ("GET", "batches", 2): "get",
        ("POST", "batches", 3): "cancel",
    }
    name = routes.get(shape)
    if name == "chat" and parts[1] != "completions":
        return None
    if name == "content" and parts[2] != "content":
        return None
    if name == "cancel" and parts[2] != "cancel":
        return None
    return name


class BatchServer:
    """The fake Batch API on a daemon thread.

    ``BatchServer(advance="poll", models=None, require_key=None, no_batch_api=None,
    require_completion_window=False, max_lines=50_000, max_bytes=100 MB,
    lines_per_step=None, list_lag=0, no_listing=False, seed=0)``. All methods are thread-safe.
    """

    def __init__(self, **options: Any) -> None:
        self.state = _State(**options)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}{BASE_PATH}"

    def __enter__(self) -> BatchServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        with self.state.lock:
            yield self.state

    # -- driving the batches

    def step(self, batch_id: str | None = None, times: int = 1) -> None:
        """Move one batch (or every batch) ``times`` statuses forward."""
        with self._locked() as state:
            for _ in range(times):
                for batch in list(state.batches.values()):
                    if batch_id is None or batch.id == batch_id:
                        state.step(batch)

    def settle(self) -> None:
        """Move every batch to its final status."""
        with self._locked() as state:
            for batch in state.batches.values():
                for _ in range(len(batch.lines) + 4):
                    if batch.status in TERMINAL:
                        break
                    state.step(batch)

    def inject(self, route: str, status: int | None = None, code: str = "", times: int = 1) -> None:
        """Answer the next ``times`` requests on ``route`` with an error (code or status)."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(sorted(ROUTES))}")
        code = code or str(status)
        status = status or http_status_for(code)
        with self._locked() as state:
            state.faults.setdefault(route, []).extend([(status, code)] * times)

    def lose_create(self, how: str = "reset", times: int = 1) -> None:
        """The next ``times`` creates make their batch, then lose the answer: ``how`` is
        "reset" (the connection closes unanswered) or "502" (a gateway error)."""
        if how not in ("reset", "502"):
            raise ValueError(f"lose_create: how is 'reset' or '502', not {how!r}")
        with self._locked() as state:
            state.lost_creates.extend([how] * times)

    def expire_next(self, after_lines: int) -> None:
        """The next batch created expires once it has answered ``after_lines`` lines."""
        with self._locked() as state:
            state.next_expire = after_lines

    def fail_next_validation(self, message: str = "line 1: body is not valid") -> None:
        """The next batch created fails validation (status failed, no output)."""
        with self._locked() as state:
            state.next_validation_failure = message

    def configure(self, **options: Any) -> None:
        """Change ``advance``, ``no_batch_api``, ``models``, ``require_key``, ... at run time."""
        with self._locked() as state:
            for name, value in options.items():
                target = {"require_completion_window": "require_window"}.get(name, name)
                if not hasattr(state, target):
                    raise TypeError(f"unknown option {name!r}")
                setattr(state, target, value)

    # -- records

    @property
    def submitted(self) -> Counter[str]:
        """custom_id -> how many created batches held it."""
        with self._locked() as state:
            return Counter(state.submitted)

    @property
    def uploads(self) -> list[dict[str, Any]]:
        with self._locked() as state:
            return [dict(u) for u in state.uploads]

    @property
    def deleted(self) -> list[str]:
        with self._locked() as state:
            return list(state.deleted)

    @property
    def requests(self) -> Counter[str]:
        """Route name -> requests received."""
        with self._locked() as state:
            return Counter(state.requests)

    def batches(self) -> list[dict[str, Any]]:
        with self._locked() as state:
            return [b.as_json() for b in state.batches.values()]

    def files(self) -> dict[str, dict[str, Any]]:
        with self._locked() as state:
            return {f.id: f.as_json() for f in state.files.values()}
