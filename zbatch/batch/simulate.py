"""The simulated Batch API behind ``--simulate --mode batch``: rehearse batch mode offline.

It behaves as a provider's Batch API does, so that a rehearsal goes through every step a real
batch run goes through: upload, create, poll, collect, delete; ``--no-wait`` (exit 10) and the
same command collecting later, in another process; ``zbatch cancel``. What it holds (files and
batches) is kept in the OUTDIR, under ``simulated-batch-api/``, because a batch outlives the
process that submitted it.

A batch is ``validating`` when created, then ``in_progress`` while its lines are worked
through at ``concurrency`` lines per ``[simulate] latency`` seconds (300 lines at the defaults:
about a second), then ``completed``; its answers come from the live simulated endpoint
(:class:`zbatch.simulate.SimulatedEndpoint`), so batch and live rehearsals give the same
answers. A Batch API has no per-key concurrency limit, so no line is ``rate_limited``, and a
batch's lines do not fail on server errors; ``[simulate] content_filter`` applies as live.
A cancelled batch keeps the answers of the lines done before the cancel, as a real one does.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

import httpx

from ..job.settings import Job
from ..simulate import SimulatedEndpoint, SimulationSpec
from ..store import OutputDir
from ..testing import multipart_fields

FOLDER = "simulated-batch-api"
FINAL = ("completed", "cancelled", "failed", "expired")


class SimulatedBatchApi(httpx.AsyncBaseTransport):
    """Answers POST /files, GET /files, GET /files/{id}/content, DELETE /files/{id},
    POST /batches, GET /batches[/{id}] and POST /batches/{id}/cancel."""

    def __init__(self, job: Job, *, seed: int | None = None) -> None:
        spec = SimulationSpec.from_job(job)
        # Lines are answered one after another when a batch completes: the per-answer latency
        # is the pace of the batch (below), not a wait per line.
        self._lines_per_second = (
            float("inf") if spec.latency <= 0 else job.concurrency / spec.latency
        )
        spec = dataclasses.replace(spec, latency=0.0, rate_limited=0.0, server_error=0.0)
        self._chat = SimulatedEndpoint(spec, seed=seed)
        self._storage = OutputDir(job.output_dir).storage
        self._storage.make_folder(FOLDER)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.rstrip("/").split("/")
        method = request.method
        content = await request.aread()
        last, before = parts[-1], parts[-2] if len(parts) > 1 else ""
        if last == "files" and method == "POST":
            return self._upload(request.headers.get("content-type", ""), content)
        if last == "files":
            listed = [json.loads(self._read(n)) for n in self._names("file-", ".json")]
            return httpx.Response(200, json={"object": "list", "data": listed})
        if before == "files" and method == "DELETE":
            self._storage.delete(f"{FOLDER}/{last}.json")
            self._storage.delete(f"{FOLDER}/{last}.jsonl")
            return httpx.Response(200, json={"id": last, "deleted": True})
        if last == "content" and self._has(f"{before}.jsonl"):
            return httpx.Response(200, content=self._read(f"{before}.jsonl"))
        if last == "batches" and method == "POST":
            return self._create(json.loads(content))
        if last == "batches":
            listed = [await self._advance(n.removesuffix(".json")) for n in self._batch_names()]
            listed.sort(key=lambda b: (b["created_at"], b["id"]), reverse=True)
            return httpx.Response(200, json={"object": "list", "data": listed, "has_more": False})
        if last == "cancel" and self._has(f"{before}.json"):
            batch = await self._advance(before)
            if batch["status"] not in FINAL:
                batch["status"] = "cancelling"
                batch["cancelled_at"] = time.time()
                self._save(batch)
            return httpx.Response(200, json=batch)
        if before == "batches" and self._has(f"{last}.json"):
            return httpx.Response(200, json=await self._advance(last))
        error = {"code": "404", "message": f"no route for {method} {request.url.path}"}
        return httpx.Response(404, json={"error": error})

    # --- what it holds, in the OUTDIR ---------------------------------------------------------

    def _names(self, prefix: str, suffix: str) -> list[str]:
        return [
            n for n in self._storage.list(FOLDER) if n.startswith(prefix) and n.endswith(suffix)
        ]

    def _batch_names(self) -> list[str]:
        return self._names("batch-", ".json")

    def _has(self, name: str) -> bool:
        return name in self._storage.list(FOLDER)

    def _read(self, name: str) -> bytes:
        data = self._storage.read_bytes(f"{FOLDER}/{name}")
        return b"" if data is None else data

    def _save(self, batch: dict[str, Any]) -> None:
        self._storage.write_bytes(f"{FOLDER}/{batch['id']}.json", json.dumps(batch).encode())

    def _store(self, data: bytes, filename: str) -> str:
        file_id = f"file-sim-{secrets.token_hex(6)}"
        self._storage.write_bytes(f"{FOLDER}/{file_id}.jsonl", data)
        meta = {"id": file_id, "object": "file", "bytes": len(data), "filename": filename}
        self._storage.write_bytes(f"{FOLDER}/{file_id}.json", json.dumps(meta).encode())
        return file_id

    # --- the routes -------------------------------------------------------------------------

    def _upload(self, content_type: str, content: bytes) -> httpx.Response:
        fields = multipart_fields(content_type, content)
        filename, data = fields.get("file", (None, b""))
        file_id = self._store(data, filename or "batch.jsonl")
        return httpx.Response(200, json=json.loads(self._read(f"{file_id}.json")))

    def _create(self, request: dict[str, Any]) -> httpx.Response:
        input_file = request["input_file_id"]
        if not self._has(f"{input_file}.jsonl"):
            error = {"code": "404", "message": f"no file {input_file}"}
            return httpx.Response(404, json={"error": error})
        total = len(self._read(f"{input_file}.jsonl").splitlines())
        batch = {
            "id": f"batch-sim-{secrets.token_hex(6)}",
            "object": "batch",
            "status": "validating",
            "endpoint": request["endpoint"],
            "input_file_id": input_file,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "started": time.time(),
            "request_counts": {"total": total, "completed": 0, "failed": 0},
            "metadata": request.get("metadata"),
            "auto_delete_input_file": bool(request.get("auto_delete_input_file")),
        }
        self._save(batch)
        return httpx.Response(200, json=batch)

    async def _advance(self, batch_id: str) -> dict[str, Any]:
        """The batch as of now: its lines worked through at the simulated pace; a cancel
        takes effect at the next look, keeping the lines done by then."""
        batch: dict[str, Any] = json.loads(self._read(f"{batch_id}.json"))
        if batch["status"] in FINAL:
            return batch
        counts = batch["request_counts"]
        until = batch.get("cancelled_at", time.time())
        elapsed = max(0.0, until - batch["started"])
        pace = self._lines_per_second
        done = counts["total"] if pace == float("inf") else int(elapsed * pace)
        done = min(counts["total"], done)
        if batch["status"] == "cancelling":
            await self._answer(batch, done)
            batch["status"] = "cancelled"
        elif done >= counts["total"]:
            await self._answer(batch, counts["total"])
            batch["status"] = "completed"
        else:
            batch["status"] = "in_progress"
            counts["completed"] = done
        self._save(batch)
        return batch

    async def _answer(self, batch: dict[str, Any], lines: int) -> None:
        """Answer the batch's first ``lines`` lines into its output and error files."""
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for raw in self._read(f"{batch['input_file_id']}.jsonl").splitlines()[:lines]:
            line = json.loads(raw)
            chat = httpx.Request("POST", "http://simulated/chat/completions", json=line["body"])
            answer = await self._chat.handle_async_request(chat)
            out = {
                "id": f"resp-sim-{secrets.token_hex(6)}",
                "custom_id": line["custom_id"],
                "response": {"status_code": answer.status_code, "body": answer.json()},
            }
            (outputs if answer.status_code == 200 else errors).append(out)
        for key, found in (("output_file_id", outputs), ("error_file_id", errors)):
            if found:
                data = b"".join(json.dumps(item).encode() + b"\n" for item in found)
                batch[key] = self._store(data, f"{key.removesuffix('_file_id')}.jsonl")
        batch["request_counts"].update(completed=len(outputs), failed=len(errors))
        batch["completed_at"] = int(time.time())
        if batch["auto_delete_input_file"]:
            self._storage.delete(f"{FOLDER}/{batch['input_file_id']}.json")
            self._storage.delete(f"{FOLDER}/{batch['input_file_id']}.jsonl")
