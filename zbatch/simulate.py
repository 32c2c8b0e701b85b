"""The built-in simulated endpoint behind ``--simulate``: Z.AI's answers without a key or network.

It is an httpx transport, so the whole pipeline (limits, retries, checkpoints,
outputs) runs exactly as against the real API. Answers are deterministic per
prompt: a label from the job's choices, a JSON object with the job's json_fields,
or a short text.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from typing import Any

import anyio
import httpx

from .job import Job


class SimulatedEndpoint(httpx.AsyncBaseTransport):
    """Answers chat completion requests like Z.AI, with settable latency and failure rates."""

    def __init__(self, job: Job, *, seed: int | None = None) -> None:
        self._job = job
        self._rng = random.Random(seed)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        job = self._job
        body = json.loads(await request.aread())
        latency = self._rng.uniform(0.5, 1.5) * job.simulate_latency
        await anyio.sleep(latency)
        draw = self._rng.random()
        if draw < job.simulate_rate_limited:
            return _error(429, "1302", "Concurrency too high for this model; please slow down")
        draw -= job.simulate_rate_limited
        if draw < job.simulate_server_error:
            return _error(500, "500", "Internal error (simulated)")
        draw -= job.simulate_server_error
        filtered = draw < job.simulate_content_filter
        return httpx.Response(200, json=self._answer(body, filtered))

    def _answer(self, body: dict[str, Any], filtered: bool) -> dict[str, Any]:
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        digest = hashlib.sha256(prompt.encode()).digest()
        content = "" if filtered else self._content(digest, prompt)
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(content) // 4)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if (body.get("thinking") or {}).get("type") == "enabled":
            message["reasoning_content"] = "Simulated reasoning."
        return {
            "id": uuid.uuid4().hex,
            "request_id": uuid.uuid4().hex,
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "sensitive" if filtered else "stop",
                    "message": message,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }

    def _content(self, digest: bytes, prompt: str) -> str:
        job = self._job
        if job.choices:
            return job.choices[digest[0] % len(job.choices)]
        if job.response_format == "json_object":
            obj: dict[str, Any] = {}
            for name, kind in job.json_fields:
                obj[name] = {
                    "int": digest[1],
                    "float": digest[2] / 255,
                    "bool": digest[3] > 127,
                }.get(kind, f"simulated {name}")
            return json.dumps(obj or {"answer": "simulated"})
        return f"Simulated answer ({len(prompt)} characters of prompt)."


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
