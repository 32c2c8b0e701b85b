"""Fake Z.AI (OpenAI-compatible) chat completions server for zbatch tests and benchmarks.

Why it exists: zbatch's retry, concurrency, rate-limit, fatal-stop and resume logic has to be
tested against every failure Z.AI can produce, deterministically, fast, and without network or
API keys. The server speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) directly on
an ``asyncio.Protocol`` to serve thousands of requests per second on loopback, so throughput
benchmarks measure the client and not the fake.

Answers are a pure function of the prompt (:func:`answer_for`), so a test can check that every
output row holds the answer to its own prompt. Faults come from directives inside a prompt
(``FAIL=1302,500,reset``; ``FAIL=gzip`` is no fault but a gzip-encoded answer; the hostile
answers ``oddtypes``, ``nomessage``, ``error200``, ``hugeretry``, ``nousage`` (no usage) and
``nanusage`` (every usage count NaN) test a client's parsing and billing;
``WRONG=k`` answers text that is not JSON until the conversation has asked again k times;
``VOTES=a|b|c`` answers the words in turn, one per choice of an ``n`` request or per request)
or from global settings (``latency``, ``max_inflight``, ``rpm``, ``fatal_code``,
``fatal_after``, ``rates``, ``seed``, ``slow_seconds``, ``require_key``, ``quota_reset``,
``answer``, ``structured``, ``models``) that can be changed
at run time through :meth:`ZaiServer.configure` or ``POST /control``.

In tests::

    with ZaiServer(max_inflight=4) as srv:
        run_zbatch(base_url=srv.base_url)
        assert srv.stats()["errors_by_code"].get("1302", 0) == 0

Standalone, for benchmarks (prints one line ``PORT <n>``, serves until SIGTERM/SIGINT)::

    python tests/zai_server.py --port 0 --latency 0.05 --max-inflight 6
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import math
import random
import re
import secrets
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, TypeVar, cast

from zbatch.answers.schema import REPAIR_PREFIX
from zbatch.testing import chat_completion, last_user_content, message_text

HOST = "127.0.0.1"
BASE_PATH = "/api/paas/v4"
MAX_HEAD_BYTES = 64 * 1024
MAX_REQUEST_STARTS = 200_000
MAX_BODIES_SAMPLE = 50
RPM_WINDOW_SECONDS = 60.0

_T = TypeVar("_T")

_LABEL_RE = re.compile(r'LABEL=(?:"([^"]*)"|(\S+))')
_JSON_RE = re.compile(r"JSON=(\{[^\r\n]*)")
_FAIL_RE = re.compile(r"FAIL=(\S+)")
_WRONG_RE = re.compile(r"WRONG=(\d+)")
_VOTES_RE = re.compile(r"VOTES=(\S+)")
# What a WRONG=k prompt is answered with until it has been asked again k times.
NOT_JSON = "Sure! Here is the JSON you asked for"

_REASONS = {status.value: status.phrase for status in HTTPStatus}

# Faults that are not Z.AI business codes; numeric names 1000-1999 (business codes) and
# 500-599 (bare HTTP 5xx) are accepted as well, see is_fault().
_NAMED_FAULTS = frozenset(
    {
        "429",
        "reset",
        "badjson",
        "slow",
        "sensitive",
        "network_error",
        "length",
        "retryafter",
        "gzip",
        "oddtypes",
        "nomessage",
        "error200",
        "hugeretry",
        "nousage",
        "nanusage",
    }
)
_FINISH_REASON_FAULTS = frozenset({"sensitive", "network_error", "length"})
_QUOTA_CODES = frozenset({"1304", "1308", "1310"})

# English versions of the messages Z.AI sends; "{reset}" becomes the next local midnight.
_CODE_MESSAGES = {
    "1000": "Authentication failed",
    "1001": "Authorization parameter not received in the request header; unable to authenticate",
    "1002": "Invalid Authorization token",
    "1003": "The Authorization token has expired",
    "1004": "Authentication failed for the provided token",
    "1110": "Your account is currently inactive. Please check your account information",
    "1111": "Your account does not exist",
    "1112": "Your account has been locked. Please contact customer service to unlock it",
    "1113": "Your account is in arrears. Please recharge and try again",
    "1120": "Your account cannot be accessed at the moment. Please try again later",
    "1121": "Your account has been locked due to irregular activity",
    "1210": "Incorrect API call parameters. Please check the documentation",
    "1211": "The model does not exist. Please check the model code",
    "1212": "The current model does not support this call method",
    "1213": "The prompt parameter was not received properly",
    "1214": "Invalid request parameter. Please check the documentation",
    "1215": "Conflicting request parameters cannot be set at the same time",
    "1220": "You do not have permission to access this API",
    "1221": "This API has been taken offline",
    "1222": "This API does not exist",
    "1230": "API call processing error",
    "1231": "A request with this request_id already exists",
    "1234": "Network error. Please try again later",
    "1261": "The prompt exceeds the maximum length",
    "1301": "The system detected potentially unsafe or sensitive content in the input or output",
    "1302": "High concurrency usage of this API. Please reduce concurrency or contact customer "
    "service to increase the limit",
    "1303": "High frequency usage of this API. Please reduce the request frequency",
    "1304": "Daily quota reached; it resets at {reset}",
    "1305": "Rate limit triggered. Please try again later",
    "1308": "Usage limit reached for your plan; it resets at {reset}",
    "1309": "Your GLM Coding Plan package has expired",
    "1310": "Weekly/monthly limit exhausted; it resets at {reset}",
}


# --------------------------------------------------------------------------- answers


def _answer_for_text(text: str) -> str:
    label = _LABEL_RE.search(text)
    if label is not None:
        quoted, bare = label.groups()
        return quoted if quoted is not None else bare
    obj = _JSON_RE.search(text)
    if obj is not None:
        return obj.group(1)
    return "echo:" + hashlib.sha1(text.encode()).hexdigest()[:16]


def answer_for(messages: Iterable[Any]) -> str:
    """The content the server answers to ``messages``; tests call it to check every result row.

    Rules, applied to the last user message: ``LABEL=word`` or ``LABEL="some words"`` answers
    that text verbatim (so tests can produce valid, invalid or oddly formatted labels);
    otherwise ``JSON={...}`` answers the rest of that line verbatim; otherwise the answer is
    ``"echo:"`` plus the first 16 hex digits of the prompt's SHA-1, unique per prompt. In a
    conversation that asked again (:func:`row_prompt`) the rules apply to the row's prompt.
    """
    return _answer_for_text(row_prompt(list(messages)))


def row_prompt(messages: list[Any]) -> str:
    """The row's own prompt: the last user message that is not zbatch asking again after an
    answer that failed its schema (a user message beginning with REPAIR_PREFIX)."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    own = [m for m in users if not message_text(m.get("content")).startswith(REPAIR_PREFIX)]
    return last_user_content(own)


def repair_round(messages: list[Any]) -> int:
    """How often this conversation asked again after an answer that failed its schema."""
    return sum(
        1
        for m in messages
        if isinstance(m, dict)
        and m.get("role") == "user"
        and message_text(m.get("content")).startswith(REPAIR_PREFIX)
    )


def word_for(words: str, prompt: str) -> str:
    """With the ``answer`` setting ("w1|w2|…"), the word a prompt without a directive gets:
    chosen by the prompt's SHA-1, so a test can tell which row got which."""
    choices = words.split("|")
    return choices[int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16) % len(choices)]


def max_in_window(timestamps: Iterable[float], window: float = 60.0) -> int:
    """Most timestamps inside any half-open interval ``[t, t + window)``.

    An RPM limit is a promise about every 60-second window, not about the average rate, so
    tests check a client's pacing with this over ``stats()["request_starts"]``.
    """
    ordered = sorted(timestamps)
    best = first = 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


# --------------------------------------------------------------------------- settings


def is_fault(name: str) -> bool:
    """Whether ``name`` is a fault the server can inject (FAIL directives, rates, fatal_code)."""
    if name in _NAMED_FAULTS:
        return True
    if name.isascii() and name.isdigit():
        number = int(name)
        return 1000 <= number <= 1999 or 500 <= number <= 599
    return False


def http_status_for(code: str) -> int:
    """HTTP status Z.AI sends with business error ``code`` (ZAI.md error table)."""
    number = int(code)
    if 1000 <= number <= 1004:
        return 401
    if number in (1113, 1302, 1303, 1304, 1305, 1308, 1310):
        return 429
    if number in (1120, 1230, 1234):
        return 500
    if number in (1110, 1111, 1112, 1121, 1309) or 1220 <= number <= 1222:
        return 403
    return 400


def _number(value: object) -> float:
    # JSON booleans are ints in Python; a boolean latency or limit is always a caller mistake.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(value)
    if not number >= 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return number


def _count(value: object) -> int:
    number = _number(value)
    if number != int(number):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(number)


def _optional(convert: Callable[[object], _T]) -> Callable[[object], _T | None]:
    return lambda value: None if value is None else convert(value)


def _fault_name(value: object) -> str:
    name = str(value)
    if not is_fault(name):
        raise ValueError(f"unknown fault {name!r}")
    return name


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer seed, got {value!r}")
    return int(value)


def _rates(value: object) -> dict[str, float]:
    if isinstance(value, str):
        value = json.loads(value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected an object of fault name -> probability, got {value!r}")
    rates = {_fault_name(name): _number(p) for name, p in value.items()}
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return rates


# The structured outputs a server may understand (``structured``), besides plain JSON mode.
STRUCTURED = ("json_schema", "json_object")


_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "latency": _number,
    "max_inflight": _optional(_count),
    "rpm": _optional(_count),
    "fatal_code": _optional(_fault_name),
    "fatal_after": _optional(_count),
    "rates": _rates,
    "seed": _seed,
    "slow_seconds": _number,
    "require_key": _optional(str),
    "quota_reset": _optional(str),
    "answer": _optional(str),
    "structured": _optional(lambda value: _one_of(value, STRUCTURED)),
    "models": _optional(str),
}


def _one_of(value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Global behaviour; every field is also a ``/control`` key and a CLI flag."""

    latency: float = 0.0
    max_inflight: int | None = None
    rpm: int | None = None
    fatal_code: str | None = None
    fatal_after: int | None = None
    rates: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0
    slow_seconds: float = 30.0
    require_key: str | None = None
    quota_reset: str | None = None  # the reset time quota answers name; None: next midnight
    answer: str | None = None  # "w1|w2|…": a prompt with no directive gets one of these words
    # Answer like an OpenAI-compatible server with structured outputs: "json_schema" (vLLM,
    # llama.cpp's llama-server: response_format json_schema and "n" are understood) or
    # "json_object" (llama-cpp-python's server: the schema rides in response_format
    # json_object; json_schema is refused, n ignored). None, like Z.AI: JSON mode only,
    # json_schema refused (1214), n ignored.
    structured: str | None = None
    models: str | None = None  # "m1|m2|…": the models that exist; any other gets 1211

    def updated(self, changes: dict[str, Any]) -> Settings:
        """Validated copy with ``changes`` applied; ValueError lets /control answer 400."""
        unknown = sorted(set(changes) - set(_CONVERTERS))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        values = self.as_dict()
        for key, value in changes.items():
            try:
                values[key] = _CONVERTERS[key](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{key}: {exc}") from exc
        return Settings(**values)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rates": dict(self.rates)}


# --------------------------------------------------------------------------- engine


@dataclasses.dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool
    expect_continue: bool
    length: int
    body: bytes = b""


@dataclasses.dataclass(slots=True)
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    extra_headers: str = ""  # preformatted "Name: value\r\n" lines
    stat: str | None = None  # errors_by_code key; None marks a normal answer
    prompt: str | None = None  # for normal answers: recorded in answered_prompts
    chat: bool = False  # a chat request: counted in inflight and in the stats
    delay: float = 0.0
    abort: bool = False  # reset the TCP connection instead of answering


@dataclasses.dataclass
class _Stats:
    requests: int = 0
    successes: int = 0
    errors_by_code: dict[str, int] = dataclasses.field(default_factory=dict)
    inflight: int = 0
    max_inflight_seen: int = 0
    abandoned: int = 0
    connections: int = 0
    auth_headers_seen: int = 0
    proxy_authorization: str | None = None  # the last one seen (a forward proxy's credentials)
    answered_prompts: list[str] = dataclasses.field(default_factory=list)
    request_starts: list[float] = dataclasses.field(default_factory=list)
    bodies_sample: list[Any] = dataclasses.field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        # Shallow copies of the big lists: dataclasses.asdict would deep-copy 200k floats.
        return {
            "requests": self.requests,
            "successes": self.successes,
            "errors_by_code": dict(self.errors_by_code),
            "inflight": self.inflight,
            "max_inflight_seen": self.max_inflight_seen,
            "abandoned": self.abandoned,
            "connections": self.connections,
            "auth_headers_seen": self.auth_headers_seen,
            "proxy_authorization": self.proxy_authorization,
            "answered_prompts": list(self.answered_prompts),
            "request_starts": list(self.request_starts),
            "bodies_sample": copy.deepcopy(self.bodies_sample),
        }


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(code: str, message: str) -> bytes:
    return _json_bytes({"error": {"code": code, "message": message}})


def _next_midnight() -> str:
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    return f"{tomorrow.isoformat()} 00:00:00"


def _format_type(body: object) -> object:
    """The request's response_format type, if it names one."""
    response_format = body.get("response_format") if isinstance(body, dict) else None
    return response_format.get("type") if isinstance(response_format, dict) else None


def _body_problem(body: object, *, structured: str | None = None) -> str | None:
    """Why ``body`` is not a usable chat request (Z.AI answers such requests with 1214)."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "the model field is missing or empty"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "the messages field is missing or empty"
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        return "every message must be an object with a role"
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        allowed = ("text", "json_object", "json_schema")
        if kind not in allowed[: 3 if structured == "json_schema" else 2]:
            return f"response_format type {kind!r} is not supported"
        if structured == "json_object" and not isinstance(response_format.get("schema", {}), dict):
            return "response_format json_object's schema must be an object"
        schema = response_format.get("json_schema")
        if kind == "json_schema" and not (
            isinstance(schema, dict)
            and isinstance(schema.get("name"), str)
            and isinstance(schema.get("schema"), dict)
        ):
            return "response_format json_schema needs {name, schema}"
    return None


class _Engine:
    """All state and decisions; runs only on the event loop thread, so it needs no locks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = _Stats()
        self.connections: set[_Connection] = set()
        self._rng = random.Random(settings.seed)
        self._attempts: dict[str, int] = {}
        self._accepted: deque[float] = deque()
        self._granted = 0  # normal answers decided, what fatal_after counts
        self._started = time.monotonic()
        self._id_prefix = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(4)
        self._serial = 0

    async def listen(self, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Connection(self), HOST, port, backlog=4096)

    async def close(self, server: asyncio.Server) -> None:
        server.close()
        for connection in list(self.connections):
            connection.abort()
        await server.wait_closed()

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings.updated(changes)
        if "seed" in changes:
            self._rng.seed(settings.seed)
        self.settings = settings
        return settings.as_dict()

    def reset_stats(self) -> None:
        """Fresh counters, FAIL attempt counts, RPM window and RNG, so tests can reuse prompts.

        Requests still in flight stay counted in ``inflight`` so the count never goes negative.
        """
        inflight = self.stats.inflight
        self.stats = _Stats(inflight=inflight, max_inflight_seen=inflight)
        self._attempts.clear()
        self._accepted.clear()
        self._granted = 0
        self._started = time.monotonic()
        self._rng.seed(self.settings.seed)

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()

    # -- routing

    def handle(self, request: _Request) -> _Reply:
        method, path = request.method, request.path
        if path.endswith("/chat/completions"):
            if method != "POST":
                return self._plain_error(405, f"use POST for {path}")
            return self._chat(request)
        if (method, path) == ("GET", "/stats"):
            return _Reply(body=_json_bytes(self.snapshot()))
        if (method, path) == ("POST", "/reset-stats"):
            self.reset_stats()
            return _Reply(body=b'{"ok":true}')
        if (method, path) == ("POST", "/control"):
            try:
                changes = json.loads(request.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of settings")
                return _Reply(body=_json_bytes(self.configure(changes)))
            except ValueError as exc:
                return self._plain_error(400, str(exc))
        return self._plain_error(404, f"no route for {method} {path}")

    @staticmethod
    def _plain_error(status: int, message: str) -> _Reply:
        return _Reply(status, _error_body(str(status), message))

    # -- chat completions

    def _chat(self, request: _Request) -> _Reply:
        stats = self.stats
        now = time.monotonic()
        stats.requests += 1
        # Every chat request counts from arrival to answer, rejected ones included, so
        # max_inflight_seen is the client's concurrency as the server saw it.
        stats.inflight += 1
        stats.max_inflight_seen = max(stats.max_inflight_seen, stats.inflight)
        if len(stats.request_starts) < MAX_REQUEST_STARTS:
            stats.request_starts.append(round(now - self._started, 6))
        auth = request.headers.get("authorization")
        if auth is not None:
            stats.auth_headers_seen += 1
        stats.proxy_authorization = request.headers.get("proxy-authorization")
        reply = self._decide(request.body, auth, now)
        reply.chat = True
        return reply

    def _decide(self, raw: bytes, auth: str | None, now: float) -> _Reply:
        """Gates first (auth, validation, fatal, concurrency, RPM), then faults, then answer."""
        settings = self.settings
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if body is not None and len(self.stats.bodies_sample) < MAX_BODIES_SAMPLE:
            self.stats.bodies_sample.append(body)
        if settings.require_key is not None and auth != f"Bearer {settings.require_key}":
            return self._code_reply("1001")
        if body is None:
            return self._code_reply("1210", "The request body is not valid JSON")
        if settings.structured == "json_object" and _format_type(body) == "json_schema":
            # as llama-cpp-python's server refuses it: a 500 quoting its request validation
            message = (
                "1 validation error: {'type': 'literal_error', 'loc': ('body', "
                "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}"
            )
            error = {"message": message, "type": "internal_server_error", "code": None}
            return _Reply(500, _json_bytes({"error": error}), stat="500")
        problem = _body_problem(body, structured=settings.structured)
        if problem is not None:
            return self._code_reply("1214", f"Invalid request parameter: {problem}")
        prompt = row_prompt(body["messages"])
        if settings.models is not None and body["model"] not in settings.models.split("|"):
            return self._code_reply("1211")
        fatal = self._fatal_code()
        if fatal is not None:
            return self._fault(fatal, body, prompt, delay=0.0)
        if settings.max_inflight is not None and self.stats.inflight - 1 >= settings.max_inflight:
            return self._code_reply("1302", "Concurrency too high for this API and model")
        if settings.rpm is not None:
            window = self._accepted
            while window and now - window[0] >= RPM_WINDOW_SECONDS:
                window.popleft()
            if len(window) >= settings.rpm:
                return self._code_reply("1303")
            window.append(now)
        fault = self._directive_fault(prompt) if "FAIL=" in prompt else self._random_fault()
        if fault is not None:
            return self._fault(fault, body, prompt, settings.latency)
        return self._answer(body, prompt, settings.latency)

    def _fatal_code(self) -> str | None:
        settings = self.settings
        if settings.fatal_after is None:
            return settings.fatal_code
        if self._granted >= settings.fatal_after:
            return settings.fatal_code or "1113"
        return None

    def _directive_fault(self, prompt: str) -> str | None:
        """Fault for this attempt of ``prompt``: FAIL specs are used up one per attempt.

        Only attempts that got past the global gates count, so a 1302 from ``max_inflight``
        does not consume a spec. ``spec*`` repeats forever once reached. Prompts carrying a
        directive never draw random ``rates`` faults, so their sequences stay exact.
        """
        match = _FAIL_RE.search(prompt)
        if match is None:
            return self._random_fault()
        attempt = self._attempts.get(prompt, 0)
        self._attempts[prompt] = attempt + 1
        for index, spec in enumerate(s for s in match.group(1).split(",") if s):
            if attempt == index or (spec.endswith("*") and attempt > index):
                return spec.removesuffix("*")
        return None

    def _random_fault(self) -> str | None:
        rates = self.settings.rates
        if not rates:
            return None
        draw = self._rng.random()
        for name, probability in rates.items():
            if draw < probability:
                return name
            draw -= probability
        return None

    def _fault(self, name: str, body: dict[str, Any], prompt: str, delay: float) -> _Reply:
        if name == "slow":
            return self._answer(body, prompt, delay + self.settings.slow_seconds)
        if name == "reset":
            return _Reply(stat="reset", abort=True, delay=delay)
        if name == "gzip":  # the normal answer, sent gzip-encoded
            reply = self._answer(body, prompt, delay)
            reply.body = gzip.compress(reply.body)
            reply.extra_headers = "Content-Encoding: gzip\r\n"
            return reply
        if name == "badjson":
            return _Reply(body=b'{"choices": [', stat="badjson", delay=delay)
        if name == "oddtypes":  # the normal answer, its fields of types a parser must survive
            answer = json.loads(self._answer(body, prompt, delay).body)
            answer["request_id"] = self._serial
            answer["model"] = 4.6
            answer["usage"]["prompt_tokens"] = str(answer["usage"]["prompt_tokens"])
            return _Reply(body=_json_bytes(answer), prompt=prompt, delay=delay)
        if name in ("nousage", "nanusage"):  # the normal answer, its usage absent or NaN
            answer = json.loads(self._answer(body, prompt, delay).body)
            if name == "nousage":
                del answer["usage"]
            else:
                answer["usage"] = dict.fromkeys(answer["usage"], math.nan)
            payload = json.dumps(answer, separators=(",", ":")).encode()  # NaN as JSON allows
            return _Reply(body=payload, prompt=prompt, delay=delay)
        if name == "nomessage":
            choice = {"index": 0, "finish_reason": "stop", "message": None}
            return _Reply(body=_json_bytes({"choices": [choice]}), stat=name, delay=delay)
        if name == "error200":  # "no balance", sent as an error object with status 200
            return _Reply(body=_error_body("1113", _CODE_MESSAGES["1113"]), stat=name, delay=delay)
        if name in _FINISH_REASON_FAULTS:
            answer = _answer_for_text(prompt)
            content = answer[: len(answer) // 2] if name == "length" else ""
            payload = self._completion(body, content, answer, finish_reason=name)
            return _Reply(body=payload, stat=name, delay=delay)
        if name == "429":
            return _Reply(
                429, b"Too Many Requests", "text/plain; charset=utf-8", stat="429", delay=delay
            )
        if name in ("retryafter", "hugeretry"):
            reply = self._code_reply("1302", delay=delay)
            seconds = "1" if name == "retryafter" else "99999999"
            reply.extra_headers = f"Retry-After: {seconds}\r\n"
            return reply
        if not is_fault(name):
            message = f"zai_server: unknown fault {name!r} in a FAIL directive"
            return _Reply(400, _error_body("1214", message), stat="bad_directive", delay=delay)
        status = int(name)
        if status < 1000:
            return _Reply(status, _error_body("500", "Internal error"), stat=name, delay=delay)
        return self._code_reply(name, delay=delay)

    def _code_reply(self, code: str, message: str | None = None, delay: float = 0.0) -> _Reply:
        if message is None:
            message = _CODE_MESSAGES.get(code, f"Request failed with error code {code}")
            if code in _QUOTA_CODES:
                message = message.format(reset=self.settings.quota_reset or _next_midnight())
        return _Reply(http_status_for(code), _error_body(code, message), stat=code, delay=delay)

    def _answer(self, body: dict[str, Any], prompt: str, delay: float) -> _Reply:
        self._granted += 1
        answer = _answer_for_text(prompt)
        if self.settings.answer is not None and answer.startswith("echo:"):
            answer = word_for(self.settings.answer, prompt)
        wrong = _WRONG_RE.search(prompt)
        if wrong is not None and repair_round(body["messages"]) < int(wrong.group(1)):
            answer = NOT_JSON  # asked again with the error, it answers right
        votes = _VOTES_RE.search(prompt)
        n = body.get("n") if self.settings.structured == "json_schema" else None
        count = n if isinstance(n, int) and 1 < n <= 128 else 1
        contents = [answer] * count
        if votes is not None:
            words = votes.group(1).split("|")
            asked = self._attempts.get("VOTES " + prompt, 0)  # the same request sent again
            self._attempts["VOTES " + prompt] = asked + count
            contents = [words[(asked + i) % len(words)] for i in range(count)]
        payload = self._completion(body, contents[0], answer, finish_reason="stop")
        if count > 1:
            completion = json.loads(payload)
            choice = completion["choices"][0]
            completion["choices"] += [
                {**choice, "index": i, "message": {**choice["message"], "content": content}}
                for i, content in enumerate(contents[1:], start=1)
            ]
            payload = _json_bytes(completion)
        return _Reply(body=payload, prompt=prompt, delay=delay)

    def _completion(
        self, body: dict[str, Any], content: str, answer: str, finish_reason: str
    ) -> bytes:
        self._serial += 1
        return _json_bytes(
            chat_completion(
                body,
                content,
                model=body["model"],
                answer_id=f"{self._id_prefix}{self._serial:010d}",
                request_id=f"req-{self._id_prefix}-{self._serial}",
                finish_reason=finish_reason,
                reasoning="thought about " + answer,
            )
        )

    def finished(self, reply: _Reply, delivered: bool) -> None:
        """Account for a chat reply once it was written (or its client went away first)."""
        if not reply.chat:
            return
        stats = self.stats
        stats.inflight -= 1
        if not delivered:
            stats.abandoned += 1
        elif reply.stat is None:
            stats.successes += 1
            stats.answered_prompts.append(reply.prompt or "")
        else:
            stats.errors_by_code[reply.stat] = stats.errors_by_code.get(reply.stat, 0) + 1


# --------------------------------------------------------------------------- HTTP/1.1


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(raw: bytes) -> _Request:
    lines = raw.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505, f"unsupported version {version}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise _BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(501, "chunked request bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest(400, "invalid Content-Length") from None
    if length < 0:
        raise _BadRequest(400, "invalid Content-Length")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return _Request(
        method=method,
        path=target.partition("?")[0],
        headers=headers,
        keep_alive=keep_alive,
        expect_continue=headers.get("expect", "").lower() == "100-continue",
        length=length,
    )


def _encode(reply: _Reply, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        f"{reply.extra_headers}"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + reply.body


class _Connection(asyncio.Protocol):
    """One client connection; requests are answered strictly in order (HTTP/1.1 pipelining).

    Zero-delay replies are written straight from ``data_received``, without creating a task,
    which is what keeps the server fast; delayed replies use ``call_later``.
    """

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: _Request | None = None  # parsed head still waiting for its body
        self._pending: _Reply | None = None  # reply waiting out its delay
        self._timer: asyncio.TimerHandle | None = None
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._engine.connections.add(self)
        self._engine.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._engine.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            self._engine.finished(self._pending, delivered=False)
            self._pending = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._pending is None:
            self._process()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _process(self) -> None:
        while self._open() and self._pending is None:
            request = self._next_request()
            if request is None:
                return
            reply = self._engine.handle(request)
            self._keep_alive = request.keep_alive
            if reply.delay > 0:
                self._pending = reply
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(reply.delay, self._deliver_pending)
            else:
                self._deliver(reply)

    def _next_request(self) -> _Request | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._reject(431, "request head too large")
                return None
            try:
                self._head = _parse_head(bytes(buffer[:end]))
            except _BadRequest as exc:
                self._reject(exc.status, str(exc))
                return None
            del buffer[: end + 4]
            if self._head.expect_continue and len(buffer) < self._head.length:
                assert self._transport is not None
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request = self._head
        if len(buffer) < request.length:
            return None
        request.body = bytes(buffer[: request.length])
        del buffer[: request.length]
        self._head = None
        return request

    def _reject(self, status: int, message: str) -> None:
        self._keep_alive = False
        self._deliver(_Reply(status, _error_body(str(status), message)))

    def _deliver_pending(self) -> None:
        reply, self._pending, self._timer = self._pending, None, None
        assert reply is not None
        self._deliver(reply)
        self._process()

    def _deliver(self, reply: _Reply) -> None:
        transport = self._transport
        assert transport is not None
        if reply.abort:
            # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.write(_encode(reply, self._keep_alive))
            if not self._keep_alive:
                transport.close()
        self._engine.finished(reply, delivered=True)


async def _serve(
    engine: _Engine, port: int, on_ready: Callable[[int, asyncio.Event], None]
) -> None:
    """Listen, report the bound port and a stop event through ``on_ready``, serve until set."""
    server = await engine.listen(port)
    stop = asyncio.Event()
    try:
        on_ready(server.sockets[0].getsockname()[1], stop)
        await stop.wait()
    finally:
        await engine.close(server)


# --------------------------------------------------------------------------- test API


class ZaiServer:
    """The fake server on a daemon thread, for tests in the same process.

    ``ZaiServer(port=0, **settings)``; settings are the :class:`Settings` fields. All methods
    are thread-safe: they run on the server's event loop and wait for the result.
    """

    def __init__(self, port: int = 0, **settings: Any) -> None:
        self._engine = _Engine(Settings().updated(settings))
        self._requested_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}{BASE_PATH}"

    def start(self) -> ZaiServer:
        """Start serving; returns once the socket is bound, so ``port`` is known."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        ready = threading.Event()
        failures: list[Exception] = []

        def on_ready(port: int, stop: asyncio.Event) -> None:
            self.port, self._stop = port, stop
            self._loop = asyncio.get_running_loop()
            ready.set()

        def run() -> None:
            try:
                asyncio.run(_serve(self._engine, self._requested_port, on_ready))
            except Exception as exc:  # reported by start() when it happens before ready
                failures.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="zai-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failures:
            self._thread.join()
            self._thread = None
            raise failures[0]
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the thread to end."""
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)
        self._thread = self._loop = self._stop = None

    def __enter__(self) -> ZaiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, function: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None:  # not running: no other thread touches the engine
            return function()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """A consistent copy of the counters.

        Keys: ``requests`` (chat requests received), ``successes`` (normal answers written),
        ``errors_by_code`` (business code, HTTP status or fault name -> count, including the
        200 faults sensitive/network_error/length/badjson/nomessage/error200), ``inflight``,
        ``max_inflight_seen`` (rejected requests included), ``abandoned`` (client left before
        its delayed answer), ``connections`` (TCP connections accepted),
        ``auth_headers_seen``, ``answered_prompts`` (last user message of each normal answer,
        in order), ``request_starts`` (arrival seconds since start or reset, first 200,000),
        ``bodies_sample`` (first 50 parsed request bodies).
        """
        return self._call(self._engine.snapshot)

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings at run time; returns the whole new configuration."""
        return self._call(lambda: self._engine.configure(settings))

    def reset_stats(self) -> None:
        self._call(self._engine.reset_stats)


# --------------------------------------------------------------------------- CLI


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (much faster for benchmarks), else the standard event loop."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fake Z.AI chat completions server on 127.0.0.1; prints 'PORT <n>'."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, help="seconds added to every answer")
    parser.add_argument("--max-inflight", type=int, help="answer 429/1302 above this")
    parser.add_argument("--rpm", type=int, help="answer 429/1303 above this many per 60 s")
    parser.add_argument("--fatal-code", help="answer every request with this fault")
    parser.add_argument("--fatal-after", type=int, help="fatal (default 1113) after N answers")
    parser.add_argument("--rates", help="JSON fault probabilities, e.g. '{\"500\": 0.02}'")
    parser.add_argument("--seed", type=int, help="seed for --rates draws")
    parser.add_argument("--slow-seconds", type=float, help="delay of the 'slow' fault")
    parser.add_argument("--require-key", help="answer 401/1001 unless 'Bearer <key>'")
    parser.add_argument("--quota-reset", help="reset time quota answers name (default: midnight)")
    parser.add_argument("--answer", help="'w1|w2|…': answer prompts with no directive so")
    parser.add_argument(
        "--structured",
        choices=STRUCTURED,
        help="understand response_format json_schema and n (vLLM), or json_object with a "
        "schema (llama-cpp-python's server)",
    )
    parser.add_argument("--models", help="'m1|m2|…': the models that exist; others get 1211")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    changes = {k: v for k, v in vars(args).items() if k != "port" and v is not None}
    try:
        engine = _Engine(Settings().updated(changes))
    except ValueError as exc:
        raise SystemExit(f"zai_server: {exc}") from exc

    def on_ready(port: int, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"PORT {port}", flush=True)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(engine, args.port, on_ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
