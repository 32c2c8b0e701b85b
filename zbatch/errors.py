"""The exception tree and the provider's error-code table.

ZbatchError                      every error zbatch raises on purpose
 ├── JobError                    the job file, flags or input are unusable (exit 2, nothing sent)
 ├── LockedError                 another run holds OUTDIR's lock (exit 75)
 ├── StoreError                  a part file could not be written: disk full, I/O error (exit 74)
 └── RunStopped                  the run stopped early but is resumable
      ├── FatalApiError          auth, balance, permission (exit 3)
      ├── QuotaReached           daily / weekly / usage quota (exit 4)
      ├── BudgetSpent            the job's cost budget is spent (exit 5)
      ├── EndpointDown           no request has succeeded for too long (exit 69)
      └── Interrupted            SIGINT / SIGTERM (exit 130 / 143)

Failures of a single request are not exceptions but values: :func:`classify`
turns an HTTP status and the provider's business code into a :class:`Failure`
whose ``scope`` tells the runner whether to retry, log the row, or stop.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass


class ZbatchError(Exception):
    """Base class of every error zbatch raises on purpose."""

    exit_code = 1


class JobError(ZbatchError):
    """The job settings or the input cannot be used; nothing was sent."""

    exit_code = 2


class LockedError(ZbatchError):
    """Another zbatch run holds the output directory's lock."""

    exit_code = 75


class StoreError(ZbatchError):
    """Writing to the output directory failed (disk full, I/O error)."""

    exit_code = 74  # EX_IOERR


class RunStopped(ZbatchError):
    """The run stopped before the end; the same command resumes it."""


class FatalApiError(RunStopped):
    """The provider refused the account: auth, balance or permission."""

    exit_code = 3


class QuotaReached(RunStopped):
    """The account's daily, weekly or usage quota is used up."""

    exit_code = 4


class BudgetSpent(RunStopped):
    """The next request could take the spend past the job's budget (``max_cost``)."""

    exit_code = 5


class EndpointDown(RunStopped):
    """No request has succeeded for ``down_after`` seconds: the endpoint is unreachable."""

    exit_code = 69  # EX_UNAVAILABLE


class Interrupted(RunStopped):
    """The run received SIGINT or SIGTERM."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Scope(enum.Enum):
    """What a failed attempt means for the run."""

    RETRY = "retry"  # transient: back off and try the same row again
    SLOW_DOWN = "slow_down"  # retry, and lower the concurrency (429 / 1302)
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


_AUTH = {"1000", "1001", "1002", "1003", "1004"}
_ACCOUNT = {"1110", "1111", "1112", "1113", "1121"}
_PERMISSION = {"1220", "1221", "1222", "1309"}
_BAD_REQUEST = {"1210", "1211", "1212", "1213", "1214", "1215", "1231", "1261"}
_CONTENT_FILTER = {"1301"}
_CONCURRENCY = {"1302"}
_FREQUENCY = {"1303", "1305"}
_QUOTA = {"1304", "1308", "1310"}
_SERVER = {"500", "1120", "1230", "1234"}

FATAL_HINTS = {
    "1113": "the account has no balance: top up, then run the same command to resume",
    "auth": "check the API key in the environment variable, then run the same command to resume",
    "account": "the account is not usable: check it in the console, then run the same command "
    "to resume",
    "endpoint": "the endpoint was not found: check base_url (the part before "
    "/chat/completions), then run the same command to resume",
    "permission": "the key has no access to this API or model: check the plan and model, then "
    "run the same command to resume",
}


def classify(status: int, code: str | None, message: str) -> Failure:
    """Classify an error answer: the body's business code first, then the HTTP status."""
    if code in _AUTH:
        return Failure("fatal", Scope.FATAL, message, status, code)
    if code in _ACCOUNT:
        return Failure("fatal", Scope.FATAL, message, status, code)
    if code in _PERMISSION:
        return Failure("fatal", Scope.FATAL, message, status, code)
    if code in _QUOTA:
        return Failure("rate_limited", Scope.QUOTA, message, status, code)
    if code in _CONCURRENCY:
        return Failure("rate_limited", Scope.SLOW_DOWN, message, status, code)
    if code in _FREQUENCY:
        return Failure("rate_limited", Scope.RETRY, message, status, code)
    if code in _CONTENT_FILTER:
        return Failure("content_filter", Scope.ROW, message, status, code)
    if code in _BAD_REQUEST:
        return Failure("bad_request", Scope.ROW, message, status, code)
    if code in _SERVER or status >= 500:
        return Failure("server_error", Scope.RETRY, message, status, code)
    if status == 429:
        # A 429 without a known code: treat as "too many in flight".
        return Failure("rate_limited", Scope.SLOW_DOWN, message, status, code)
    if status in (401, 403):
        return Failure("fatal", Scope.FATAL, message, status, code)
    if status in (404, 405):
        # No such endpoint: every row would fail the same way, so stop instead.
        return Failure("fatal", Scope.FATAL, message, status, code)
    if status in (408, 409, 425):
        return Failure("server_error", Scope.RETRY, message, status, code)
    return Failure("bad_request", Scope.ROW, message, status, code)


def fatal_hint(failure: Failure) -> str:
    """What the user should do after a fatal failure."""
    code = failure.error_code or ""
    if code in FATAL_HINTS:
        return FATAL_HINTS[code]
    if code in _AUTH or failure.status_code == 401:
        return FATAL_HINTS["auth"]
    if failure.status_code in (404, 405) and not code:
        return FATAL_HINTS["endpoint"]
    if code in _ACCOUNT:
        return FATAL_HINTS["account"]
    return FATAL_HINTS["permission"]


_RESET_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)")
# Z.AI states reset times on its own clock (Beijing time) without a zone.
PROVIDER_TZ = dt.timezone(dt.timedelta(hours=8))


def quota_reset(message: str) -> dt.datetime | None:
    """The reset time a quota message names (read as UTC+8 when it has no zone), or None."""
    match = _RESET_TIME.search(message)
    if match is None:
        return None
    try:
        when = dt.datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
    except ValueError:
        return None
    return when.replace(tzinfo=PROVIDER_TZ)


_SECRETISH = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._\-]+|(sk-|api[_-]?key[=:]\s*)[A-Za-z0-9._\-]+", re.IGNORECASE
)
MAX_MESSAGE_CHARS = 500


def redact(message: str, *secrets: str) -> str:
    """Remove secrets from a message and truncate it for storage."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    message = _SECRETISH.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message
