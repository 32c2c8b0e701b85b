"""Is the run still worth running? A dead endpoint, or a mistake every request repeats.

    down = DownDetector(down_after=300)       # exit 69: nothing but connection / 5xx for 300 s
    first = FirstRows(limit=20)               # exit 3: the first 20 rows fail the same way

These only watch and decide; the runner acts on what they say. Time is read through an
injectable ``clock`` so the rules are tested without sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..limits import Clock
from ..outcome import Failure, Scope
from ..providers.base import refuses_response_format

# The failures that say "nothing is answering": no connection, no answer in time, or a 5xx.
_DOWN_TYPES = frozenset({"connection", "timeout"})


def is_down_failure(failure: Failure) -> bool:
    """A failure that says nothing about the request, only that the endpoint did not serve it."""
    if failure.error_type in _DOWN_TYPES:
        return True
    return failure.error_type == "server_error" and (
        failure.status_code is None or failure.status_code >= 500
    )


class DownDetector:
    """Trips when no attempt has had any answer but a down failure for ``down_after`` seconds.

    Any other outcome (a success, a 400, a 429) proves the endpoint alive and resets the clock.
    An attempt still running proves nothing either way, so a slow endpoint whose answers take
    longer than ``down_after`` never trips it: it needs at least one down failure, and no
    other outcome, in the whole window.
    """

    def __init__(self, down_after: float, *, clock: Clock = time.monotonic) -> None:
        self.down_after = down_after
        self._clock = clock
        self._alive_at = clock()  # the run's start counts as a sign of life
        self.last_failure: Failure | None = None  # the latest down failure since then

    def alive(self) -> None:
        self._alive_at = self._clock()
        self.last_failure = None

    def observe(self, failure: Failure) -> None:
        if is_down_failure(failure):
            self.last_failure = failure
        else:
            self.alive()

    @property
    def down_for(self) -> float | None:
        """Seconds the endpoint has looked down, once past ``down_after``; else None."""
        if self.last_failure is None:
            return None
        silent = self._clock() - self._alive_at
        return silent if silent >= self.down_after else None


@dataclass(frozen=True, slots=True)
class Held:
    """A row's failure held back while the first rows decide whether the job is broken."""

    row_id: str
    failure: Failure
    attempts: int
    answer: str | None


# What to fix when every early row fails with one of these codes (Z.AI's business codes).
_FIX = {
    "1211": "request.model (the model does not exist)",
    "1212": "request.model (it does not support this call)",
    "1261": "request.template / request.max_tokens (the prompt is too long)",
}
_FIX_FORMAT = (
    "endpoint.schema_form (how output.schema is sent: README 'Answers that match a JSON "
    "Schema') or request.response_format"
)
_FIX_PARAMETERS = "the request settings (request.extra, temperature, top_p, max_tokens, thinking)"


class FirstRows:
    """Watches how the first ``limit`` rows of a run end.

    When every one of them fails the same non-retryable way (one error code on every request,
    or answers that are never a valid label / JSON object), the job itself is wrong: sending
    the rest would only pay for the same failure again. Their error rows are held back until
    the verdict, so that on a stop they are logged as retryable and the fixed job sends them
    again."""

    KINDS = frozenset({"bad_request", "invalid_label", "invalid_json", "invalid_response"})

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self.held: list[Held] = []
        self.deciding = limit > 0
        self.verdict: str | None = None  # why the job is wrong, once decided
        self._key: tuple[str, str | None, int | None] | None = None

    def take(self, held: Held) -> bool:
        """Whether a row's failure is the systematic one: held while deciding, or (after the
        verdict) to be logged as not the row's fault. False: log it as usual."""
        failure = held.failure
        key = (failure.error_type, failure.error_code, failure.status_code)
        same = (
            failure.scope is Scope.ROW
            and failure.error_type in self.KINDS
            and self._key in (None, key)
        )
        if self.verdict is not None:
            return same
        if not (same and self.deciding):
            return False
        self._key = key
        self.held.append(held)
        if len(self.held) >= self.limit:
            self.verdict = self._why(failure)
        return True

    def release(self) -> list[Held]:
        """Stop deciding (a row ended another way, or the run ends); the rows held so far."""
        self.deciding = False
        held, self.held = self.held, []
        return held

    def _why(self, first: Failure) -> str:
        if first.error_type == "invalid_label":
            return (
                f"the first {self.limit} rows got no answer that is one of labels.choices "
                f"(e.g. {first.message}); fix request.template / request.system (or the "
                "choices), then run the same command"
            )
        if first.error_type == "invalid_response":  # its message says what to change
            return f"the first {self.limit} rows got answers that cannot be used: {first.message}"
        if first.error_type == "invalid_json":
            return (
                f"the first {self.limit} rows got no JSON object ({first.message}); fix "
                "request.template / request.system, then run the same command"
            )
        code = first.error_code or first.status_code
        fix = _FIX.get(first.error_code or "", _FIX_PARAMETERS)
        if refuses_response_format(first.message):
            fix = _FIX_FORMAT
        return (
            f"the first {self.limit} requests all failed with {code} ({first.message}); "
            f"fix {fix}, then run the same command"
        )
