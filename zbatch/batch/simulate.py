"""The simulated Batch API behind ``--simulate --mode batch``: rehearse batch mode offline.

An httpx transport holding files and batches in memory. Each line of a batch is answered
by the live simulated endpoint (:class:`zbatch.simulate.SimulatedEndpoint`), so batch and
live rehearsals give the same answers and the same simulated failure rates (failed lines go
to the batch's error file). A batch is ``in_progress`` when created and ``completed`` at the
first poll: a rehearsal does not wait for a provider.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from typing import Any

import httpx

from ..job.settings import Job
from ..simulate import SimulatedEndpoint, SimulationSpec
from ..testing import multipart_fields


class SimulatedBatchApi(httpx.AsyncBaseTransport):
    """Answers POST /files, POST /batches, GET /batches[/{id}], cancel, file content, delete."""

    def __init__(self, job: Job, *, seed: int | None = None) -> None:
        # Lines are answered one after another: the per-answer latency would only slow the
        # rehearsal down.
        spec = dataclasses.replace(SimulationSpec.from_job(job), latency=0.0)
        self._chat = SimulatedEndpoint(spec, seed=seed)
        self._files: dict[str, tuple[str, bytes]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._serial = itertools.count(1)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.rstrip("/").split("/")
        method = request.method
        content = await request.aread()
        if parts[-1] == "files" and method == "POST":
            return self._upload(request.headers.get("content-type", ""), content)
        if parts[-1] == "files":
            listed = [self._file_json(i) for i in self._files]
            return httpx.Response(200, json={"object": "list", "data": listed})
        if parts[-2:-1] == ["files"] and method == "DELETE":
            self._files.pop(parts[-1], None)
            return httpx.Response(200, json={"id": parts[-1], "deleted": True})
        if parts[-1] == "content" and parts[-2] in self._files:
            return httpx.Response(200, content=self._files[parts[-2]][1])
        if parts[-1] == "batches" and method == "POST":
            return await self._create(json.loads(content))
        if parts[-1] == "batches":
            listed = sorted(self._batches.values(), key=lambda b: b["id"], reverse=True)
            return httpx.Response(200, json={"object": "list", "data": listed, "has_more": False})
        if parts[-1] == "cancel" and parts[-2] in self._batches:
            return httpx.Response(200, json=self._batches[parts[-2]])
        if parts[-2:-1] == ["batches"] and parts[-1] in self._batches:
            batch = self._batches[parts[-1]]
            batch["status"] = "completed"
            batch["completed_at"] = int(time.time())
            return httpx.Response(200, json=batch)
        error = {"code": "404", "message": f"no route for {method} {request.url.path}"}
        return httpx.Response(404, json={"error": error})

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-sim-{next(self._serial):06d}"

    def _file_json(self, file_id: str) -> dict[str, Any]:
        name, data = self._files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(data), "filename": name}

    def _upload(self, content_type: str, content: bytes) -> httpx.Response:
        file_id = self._new_id("file")
        fields = multipart_fields(content_type, content)
        if "file" in fields:
            filename, data = fields["file"]
            self._files[file_id] = (filename or "batch.jsonl", data)
        return httpx.Response(200, json=self._file_json(file_id))

    async def _create(self, request: dict[str, Any]) -> httpx.Response:
        _, data = self._files[request["input_file_id"]]
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for raw in data.splitlines():
            line = json.loads(raw)
            chat = httpx.Request("POST", "http://simulated/chat/completions", json=line["body"])
            answer = await self._chat.handle_async_request(chat)
            out = {
                "id": self._new_id("resp"),
                "custom_id": line["custom_id"],
                "response": {"status_code": answer.status_code, "body": answer.json()},
            }
            (outputs if answer.status_code == 200 else errors).append(out)
        batch = {
            "id": self._new_id("batch"),
            "object": "batch",
            "status": "in_progress",
            "endpoint": request["endpoint"],
            "input_file_id": request["input_file_id"],
            "output_file_id": self._store(outputs),
            "error_file_id": self._store(errors),
            "created_at": int(time.time()),
            "request_counts": {
                "total": len(outputs) + len(errors),
                "completed": len(outputs),
                "failed": len(errors),
            },
            "metadata": request.get("metadata"),
        }
        self._batches[batch["id"]] = batch
        return httpx.Response(200, json=batch)

    def _store(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        file_id = self._new_id("file")
        data = b"".join(json.dumps(item).encode() + b"\n" for item in lines)
        self._files[file_id] = ("output.jsonl", data)
        return file_id
