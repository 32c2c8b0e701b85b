"""A provider profile: what zbatch knows about one chat completions API, as data.

Every provider zbatch speaks to answers in the OpenAI wire format, so the parsing and the
classification rules live here once; a profile (:mod:`.zai`, :mod:`.openai`) only fills in
its facts: business-code table, hints, the clock its quota messages use, finish reasons
that mean failure, paths, defaults and prices. Adding a provider is a new profile, not an
edit to the client or the scheduler.

    profile = provider_for("https://api.z.ai/api/paas/v4")
    failure = profile.classify(429, "1113", "Insufficient balance")   # fatal: stop the run
    profile.fatal_hint(failure)                                       # "... top up, ..."
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..outcome import Failure, Outcome, Scope
from ..pricing import Price
from . import wire

# What an error means: (error_type, scope).
Kind = tuple[str, Scope]

FATAL: Kind = ("fatal", Scope.FATAL)
SERVER_ERROR: Kind = ("server_error", Scope.RETRY)
BAD_REQUEST: Kind = ("bad_request", Scope.ROW)

# The HTTP status when the body names no code the profile knows.
_STATUS: dict[int, Kind] = {
    429: ("rate_limited", Scope.SLOW_DOWN),  # "too many in flight"
    401: FATAL,
    403: FATAL,
    # No such endpoint: every row would fail the same way, so stop instead.
    404: FATAL,
    405: FATAL,
    408: SERVER_ERROR,
    409: SERVER_ERROR,
    425: SERVER_ERROR,
}

# How an endpoint is told the answer schema (endpoint.schema_form; the profile's by default):
# response_format {type: "json_schema", json_schema: {name, schema, strict}} (OpenAI, vLLM,
# llama.cpp's llama-server, SGLang); {type: "json_object", schema} (llama-cpp-python's server,
# Together, Fireworks); {type: "json_object"} with the schema in the system message (Z.AI).
SCHEMA_FORMS = ("json_schema", "json_object", "system")

RESUME = "then run the same command to resume"
AUTH_HINT = f"check the API key in the environment variable, {RESUME}"
PERMISSION_HINT = f"the key has no access to this API or model: check the plan and model, {RESUME}"


def refuses_response_format(message: str) -> bool:
    """Whether an error answer refuses the request's response_format: whatever its status
    (llama-cpp-python's server answers 500 to a json_schema it does not take), the same
    request is refused every time, so it is the row's failure, not one worth retrying."""
    return "response_format" in message


_RESET_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)")


@dataclass(frozen=True, slots=True)
class SimulatedFaults:
    """How the provider words the faults ``--simulate`` injects: (status, code, message)."""

    rate_limited: tuple[int, str | None, str]
    server_error: tuple[int, str | None, str]
    filtered_finish_reason: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Provider:
    """One provider's facts, and the rules that read its answers with them."""

    name: str
    default_model: str
    default_base_url: str
    # The chat path as the provider names it in Batch API files ("/v4/chat/completions").
    batch_endpoint: str
    simulated: SimulatedFaults
    chat_path: str = "/chat/completions"
    # The Batch API's completion_window, where the provider requires one (None: not sent).
    batch_window: str | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)  # lower-case model -> price
    codes: Mapping[str, Kind] = field(default_factory=dict)  # business code -> kind
    hints: Mapping[str, str] = field(default_factory=dict)  # business code -> what to do
    # finish_reason -> (error_type, scope, message) for answers that carry no usable content.
    finish_reasons: Mapping[str, tuple[str, Scope, str]] = field(default_factory=dict)
    reset_clock: dt.tzinfo = dt.UTC  # the zone of reset times its messages name without one
    # How an answer schema is sent (SCHEMA_FORMS): "json_schema" where structured outputs are
    # understood; "system" for JSON mode only (the schema in the system message).
    schema_form: str = "system"
    n: bool = False  # several answers to one request (the body's "n")

    def classify(self, status: int, code: str | None, message: str) -> Failure:
        """Classify an error answer: the body's business code first, then the HTTP status."""
        failure = self.classify_code(status, code, message)
        if failure is not None:
            return failure
        if refuses_response_format(message):
            kind = BAD_REQUEST
        else:
            kind = SERVER_ERROR if status >= 500 else _STATUS.get(status, BAD_REQUEST)
        return Failure(kind[0], kind[1], message, status, code)

    def classify_code(self, status: int, code: str | None, message: str) -> Failure | None:
        """The failure a business code means, or None when the profile does not know it."""
        kind = self.codes.get(code) if code is not None else None
        return None if kind is None else Failure(kind[0], kind[1], message, status, code)

    def fatal_hint(self, failure: Failure) -> str:
        """What the user should do after a fatal failure."""
        hint = self.hints.get(failure.error_code or "")
        if hint is not None:
            return hint
        if failure.status_code == 401:
            return AUTH_HINT
        if failure.status_code in (404, 405) and not failure.error_code:
            return (
                f"the endpoint was not found: check base_url (the part before "
                f"{self.chat_path}), {RESUME}"
            )
        return PERMISSION_HINT

    def quota_reset(self, message: str) -> dt.datetime | None:
        """The reset time a quota message names (on the provider's clock), or None."""
        match = _RESET_TIME.search(message)
        if match is None:
            return None
        try:
            when = dt.datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
        except ValueError:
            return None
        return when.replace(tzinfo=self.reset_clock)

    def error_details(self, raw: bytes) -> tuple[str | None, str]:
        """The business code and message of an error body, if it has them."""
        return wire.error_details(raw)

    def parse_answer(self, raw: bytes, latency_ms: int | None) -> Outcome:
        """A 200 body as a Success, or a Failure when it is unusable or an error in disguise.

        Every field is untrusted: see :func:`zbatch.providers.wire.read_answer`.
        """
        answer = wire.read_answer(raw, latency_ms, self.finish_reasons)
        if not isinstance(answer, wire.ErrorObject):
            return answer
        # An error sent with status 200: its code decides, as it would under a 4xx/5xx; a
        # code the profile does not know is worth another try.
        known = self.classify_code(200, answer.code, answer.message)
        return known or Failure(
            "invalid_response",
            Scope.RETRY,
            f"an error object in a 200 answer: {answer.message}",
            200,
            answer.code,
        )
