"""The OpenAI wire format of answers and error bodies, read as untrusted input.

A server can send anything with a 200: the wrong types, negative or absurd token counts,
strings no output file can hold, an error object instead of an answer. Each field is checked
here and either fits the result schema or becomes a :class:`Failure`, so one odd value can
never reach the store and cost the answers bought with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..outcome import Failure, Outcome, Scope, Success, storable_text

# No request comes near this many tokens; a larger count is a broken answer, and it also fits
# every integer column zbatch writes.
MAX_TOKENS = 2**31 - 1
_SNIPPET = 200


@dataclass(frozen=True, slots=True)
class ErrorObject:
    """An error body (``{"error": {...}}`` or ``{"code", "msg"}``) found where an answer was."""

    code: str | None
    message: str


def read_answer(
    raw: bytes, latency_ms: int | None, failing: Mapping[str, tuple[str, Scope, str]]
) -> Outcome | ErrorObject:
    """A 200 body as a Success, a Failure, or the error object it holds instead.

    ``failing`` maps the finish reasons that mean "no usable answer" to their failure.
    """
    data = _load(raw)
    if not isinstance(data, dict):
        return _unusable(raw)
    choices = data.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        error = _error_of(data)
        return _unusable(raw) if error is None else error
    choice = choices[0]
    finish_reason = text(choice.get("finish_reason"))
    failed = failing.get(finish_reason or "")
    if failed is not None:
        return Failure(failed[0], failed[1], failed[2], 200)
    message = choice.get("message")
    if not isinstance(message, dict):
        return _invalid("a 200 answer without a message", raw)
    content = _content(message)
    if content is None:
        refusal = text(message.get("refusal"))  # OpenAI's way of declining: asking again won't help
        if refusal:
            return Failure("content_filter", Scope.ROW, f"the model refused: {refusal}", 200)
        return _invalid("a 200 answer without content", raw)
    prompt, completion, total, cached, malformed = _usage(data.get("usage"))
    return Success(
        content=content,
        reasoning_content=text(message.get("reasoning_content")),
        finish_reason=finish_reason,
        model=text(data.get("model")),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=cached,
        request_id=text(data.get("request_id")) or text(data.get("id")),
        latency_ms=latency_ms,
        usage_malformed=malformed,
        alternatives=_alternatives(choices) if len(choices) > 1 else (),
    )


def _alternatives(choices: list[Any]) -> tuple[str, ...]:
    """The contents of the choices after the first (an answer to a request with "n")."""
    contents = []
    for choice in choices[1:]:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = _content(message) if isinstance(message, dict) else None
        contents.append("" if content is None else content)
    return tuple(contents)


def error_details(raw: bytes) -> tuple[str | None, str]:
    """The business code and message of an error body, if it has them."""
    error = _error_of(_load(raw))
    if error is not None:
        return error.code, error.message
    return None, _snippet(raw, 300).strip()


def text(value: Any) -> str | None:
    """A string field as a string a result file can hold: numbers as text, others None."""
    if type(value) is str:  # first: this runs for several fields of every answer
        return value if value.isascii() else storable_text(value)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    return None


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
        return None


def _error_of(data: Any) -> ErrorObject | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        # OpenAI names some errors only by "type" (e.g. insufficient_quota).
        code = error.get("code") if error.get("code") is not None else error.get("type")
        return ErrorObject(_code(code), text(error.get("message")) or "")
    if "code" in data:
        return ErrorObject(_code(data["code"]), text(data.get("msg") or data.get("message")) or "")
    if isinstance(error, str):  # e.g. Ollama's {"error": "model not found"}
        return ErrorObject(None, text(error) or "")
    return None


def _code(value: Any) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1302.0 is the code 1302
    return text(value)


def _content(message: dict[str, Any]) -> str | None:
    """The answer text; None when there is none (which is not an empty answer)."""
    content = message.get("content")
    if isinstance(content, str):
        return content if content.isascii() else storable_text(content)
    if content is None:
        # A tool call is an answer without content: keep the call itself.
        content = message.get("tool_calls") or None
    if content is None:
        return None
    try:
        return json.dumps(content)  # e.g. a list of content parts, kept as JSON text
    except (ValueError, TypeError, RecursionError):
        return None


def _usage(usage: Any) -> tuple[int | None, int | None, int | None, int | None, bool]:
    """(prompt, completion, total, cached) token counts, and whether any given was unusable."""
    if usage is None:
        return None, None, None, None, False
    if not isinstance(usage, dict):
        return None, None, None, None, True
    details = usage.get("prompt_tokens_details")
    odd_details = details is not None and not isinstance(details, dict)
    given = (
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        usage.get("total_tokens"),
        details.get("cached_tokens") if isinstance(details, dict) else None,
    )
    prompt, completion, total, cached = fitted = [_tokens(value) for value in given]
    # _tokens keeps None as None, so any other None it returned is a count it dropped.
    dropped = fitted.count(None) != given.count(None)
    return prompt, completion, total, cached, odd_details or dropped


def _tokens(value: Any) -> int | None:
    """A token count, or None when it is not a plausible one."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # not a bool: type(True) is bool
        return value
    return None


def _snippet(raw: bytes, limit: int = _SNIPPET) -> str:
    return raw[:limit].decode("utf-8", "replace")


def _unusable(raw: bytes) -> Failure:
    return _invalid("unusable 200 answer", raw)


def _invalid(what: str, raw: bytes) -> Failure:
    return Failure("invalid_response", Scope.RETRY, f"{what}: {_snippet(raw)}", 200)
