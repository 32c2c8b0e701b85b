"""The built-in simulated endpoint behind ``--simulate``: answers without a key or network.

It is an httpx transport, so the whole pipeline (limits, retries, checkpoints, outputs)
runs exactly as against the real API, with the provider's own error bodies. Answers are
deterministic per prompt: the label a keyword rule suggests among the job's choices (a
random one for 8 % of prompts, so a report against gold shows mistakes), a JSON object that
fits the job's output.schema (or has its json_fields), or a short text saying it is
simulated. The ``model`` of
every answer ends in ``-simulated``, so a simulated row is recognisable in the results.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from .answers.schema import resolve
from .job.settings import Job
from .providers import ZAI, Provider
from .testing import chat_completion, last_user_content, message_text

# Words that suggest a sentiment label; every label also suggests itself when the prompt
# names it.
_CUES = {
    "positive": frozenset(
        [
            "good",
            "great",
            "love",
            "loved",
            "excellent",
            "happy",
            "perfect",
            "recommend",
            "recommended",
            "exceeded",
            "glad",
            "best",
            "amazing",
            "nice",
            "works",
            "fantastic",
            "wonderful",
            "pleased",
        ]
    ),
    "negative": frozenset(
        [
            "bad",
            "poor",
            "terrible",
            "awful",
            "broken",
            "worst",
            "hate",
            "disappointed",
            "disappointing",
            "leaked",
            "refund",
            "useless",
            "cheap",
            "stopped",
            "returned",
            "waste",
            "flimsy",
            "falling",
            "regret",
        ]
    ),
}
_CUES.update(
    {
        name: frozenset(words.split())
        for name, words in {
            # jobs/topics.toml
            "business": "company companies shares profit profits revenue market markets prices "
            "investors sales earnings merger stock bank retailer airline quarter jobs factory",
            "sports": "match team coach season league championship title goal goals cup win "
            "wins won players final race tournament club striker",
            "science": "scientists researchers study species telescope discovery experiment "
            "journal climate fossil genome physics lab laboratory",
            "politics": "minister parliament election vote government law bill party senator "
            "council mayor policy president campaign opposition",
            "entertainment": "film movie album festival actor actress series concert tour "
            "premiere singer show award awards",
            "technology": "app software smartphone ai chip startup update users data devices "
            "platform cloud robot",
            # jobs/triage.toml
            "billing": "charged charge invoice refund payment card subscription money price",
            "shipping": "package parcel delivery delivered tracking courier shipped ship arrived",
            "account": "password login log email locked unlock reset",
            "bug": "crashes crash error freezes button blank fix developers",
        }.items()
    }
)
# The label to give when the rule finds no clear winner, if the job has one of them.
_UNDECIDED = ("neutral", "other", "none", "unknown", "mixed")
_WORD = re.compile(r"\w+")
NOISE = 0.08  # the share of simulated labels drawn at random (deterministic per prompt)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationSpec:
    """What the simulated endpoint answers, and how often it fails; rates are 0..1.

    SimulatedEndpoint(SimulationSpec(latency=0.01, choices=("yes", "no")), seed=1)
    """

    latency: float = 0.05  # seconds, mean of a uniform 0.5x..1.5x draw
    rate_limited: float = 0.02
    server_error: float = 0.01
    content_filter: float = 0.0
    choices: tuple[str, ...] = ()
    # Answer a JSON object with these properties (output.schema, or json_fields as one).
    schema: Mapping[str, Any] | None = None
    provider: Provider = ZAI  # whose error bodies and finish reasons to send

    @classmethod
    def from_job(cls, job: Job) -> SimulationSpec:
        """The simulation a job's ``[simulate]`` settings, labels and JSON fields describe."""
        return cls(
            latency=job.simulate_latency,
            rate_limited=job.simulate_rate_limited,
            server_error=job.simulate_server_error,
            content_filter=job.simulate_content_filter,
            choices=tuple(job.choices),
            schema=job.answer_schema,
            provider=job.profile,
        )


class SimulatedEndpoint(httpx.AsyncBaseTransport):
    """Answers chat completion requests like the provider, with set latency and failure rates."""

    def __init__(self, spec: SimulationSpec, *, seed: int | None = None) -> None:
        self._spec = spec
        self._rng = random.Random(seed)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        spec = self._spec
        faults = spec.provider.simulated
        body = json.loads(await request.aread())
        await anyio.sleep(self._rng.uniform(0.5, 1.5) * spec.latency)
        draw = self._rng.random()
        if draw < spec.rate_limited:
            return _error(*faults.rate_limited)
        draw -= spec.rate_limited
        if draw < spec.server_error:
            return _error(*faults.server_error)
        draw -= spec.server_error
        if draw < spec.content_filter:
            return self._answer(body, "", faults.filtered_finish_reason)
        return self._answer(body, self._content(body), "stop")

    def _answer(self, body: dict[str, Any], content: str, finish_reason: str) -> httpx.Response:
        answer = chat_completion(
            body,
            content,
            model=f"{body.get('model')}-simulated",
            answer_id=f"sim-{uuid.uuid4().hex}",
            request_id=f"sim-{uuid.uuid4().hex}",
            finish_reason=finish_reason,
            reasoning="Simulated reasoning.",
        )
        return httpx.Response(200, json=answer)

    def _content(self, body: dict[str, Any]) -> str:
        spec = self._spec
        messages = body.get("messages", [])
        if spec.choices:
            return simulated_label(last_user_content(messages), spec.choices)
        prompt = "\n".join(message_text(m.get("content")) for m in messages)
        if spec.schema is None:
            return f"Simulated answer ({len(prompt)} characters of prompt)."
        digest = hashlib.sha256(prompt.encode("utf-8", "replace")).digest()
        obj = simulated_value(spec.schema, spec.schema, digest, "answer")
        return json.dumps(obj or {"answer": "simulated"})


def simulated_value(prop: Any, root: Mapping[str, Any], digest: bytes, name: str) -> Any:
    """A value that fits ``prop``, drawn from the prompt's digest (the same every time)."""
    prop = resolve(prop, root)
    values = prop.get("enum")
    if isinstance(values, list) and values:
        return values[digest[0] % len(values)]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or isinstance(prop.get("properties"), dict):
        properties = prop.get("properties") or {}
        return {
            key: simulated_value(value, root, digest[1:] + digest[:1], key)
            for key, value in properties.items()
        }
    if kind == "array":
        return [simulated_value(prop.get("items") or {}, root, digest, name)]
    if kind == "integer":
        low = prop.get("minimum", 0)
        high = prop.get("maximum", 255)
        return int(low) + digest[1] % (int(high) - int(low) + 1)
    if kind == "number":
        return digest[2] / 255
    if kind == "boolean":
        return digest[3] > 127
    return f"simulated {name}"


def plausible_label(text: str, choices: Sequence[str]) -> str:
    """The choice a keyword rule suggests for ``text``: the one whose name and cue words it
    uses most; on a tie, an undecided label ("neutral", "other", ...) or the first choice."""
    words = Counter(_WORD.findall(text.casefold()))

    def score(choice: str) -> int:
        name = choice.casefold()
        return words[name] + sum(words[cue] for cue in _CUES.get(name, ()))

    scores = [score(choice) for choice in choices]
    best = max(scores)
    leaders = [choice for choice, points in zip(choices, scores, strict=True) if points == best]
    if len(leaders) == 1:
        return leaders[0]
    return next((c for c in choices if c.casefold() in _UNDECIDED), leaders[0])


def simulated_label(text: str, choices: Sequence[str], *, noise: float = NOISE) -> str:
    """:func:`plausible_label`, except for a ``noise`` share of prompts (picked by a hash of
    the text, so the same prompt always gets the same label) that get a label drawn by the
    hash: a report against gold then shows mistakes, and two prompts for one job differ."""
    digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    if int.from_bytes(digest[:4], "big") < noise * 2**32:
        return choices[digest[4] % len(choices)]
    return plausible_label(text, choices)


def _error(status: int, code: str | None, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
