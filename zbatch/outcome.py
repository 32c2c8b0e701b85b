"""What one attempt at one request comes to: a :class:`Success` or a :class:`Failure`.

These are values, not exceptions, and every layer may use them: the client makes them, the
row pipeline accepts or logs them, the store writes them. A :class:`Failure`'s ``scope``
tells the scheduler whether to retry the row, give it up, or stop the whole run.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Scope(enum.Enum):
    """What a failed attempt means for the run."""

    RETRY = "retry"  # transient: back off and try the same row again
    SLOW_DOWN = "slow_down"  # retry, and lower the concurrency (429, "too many in flight")
    ROW = "row"  # this row fails for good; log it once
    FATAL = "fatal"  # the account cannot work: stop the whole run
    QUOTA = "quota"  # a quota is used up: stop until it resets


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, classified."""

    error_type: str
    scope: Scope
    message: str
    status_code: int | None = None
    error_code: str | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.scope in (Scope.RETRY, Scope.SLOW_DOWN)


@dataclass(frozen=True, slots=True)
class Success:
    """A usable answer.

    ``usage_malformed`` is True when the answer's token counts were present but unusable
    (not a number, negative, absurdly large): they are None here, and the run counts it.
    """

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
    usage_malformed: bool = False
    # The other choices' contents, when the request asked for several answers ("n").
    alternatives: tuple[str, ...] = ()


Outcome = Success | Failure


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` as UTF-8, and so the output parts, can hold it: lone surrogates (valid in a
    JSON escape or a Python string, not in UTF-8) become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value
