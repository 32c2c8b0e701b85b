"""The exception tree, and the redaction of secrets from messages.

ZbatchError                      every error zbatch raises on purpose
 ├── JobError                    the job file, flags or input are unusable (exit 2, nothing sent)
 ├── LockedError                 another run holds OUTDIR's lock (exit 75)
 ├── StoreError                  a part file could not be written: disk full, I/O error (exit 74)
 └── RunStopped                  the run stopped early but is resumable
      ├── FatalApiError          auth, balance, permission (exit 3)
      │    └── BatchUnconfirmed  a batch that may exist cannot be looked up (exit 3)
      ├── QuotaReached           daily / weekly / usage quota (exit 4)
      ├── BudgetSpent            the job's cost budget is spent (exit 5)
      ├── BatchPending           batch mode with --no-wait: batches still running (exit 10)
      ├── EndpointDown           no request has succeeded for too long (exit 69)
      └── Interrupted            SIGINT / SIGTERM (exit 130 / 143)

Failures of a single request are not exceptions but values (:mod:`zbatch.outcome`); the
provider profile (:mod:`zbatch.providers`) classifies them.
"""

from __future__ import annotations

import re


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


class BatchUnconfirmed(FatalApiError):
    """A batch create may have reached the provider, which has no listing to check it by."""


class QuotaReached(RunStopped):
    """The account's daily, weekly or usage quota is used up."""

    exit_code = 4


class BudgetSpent(RunStopped):
    """The next request could take the spend past the job's budget (``max_cost``)."""

    exit_code = 5


class BatchPending(RunStopped):
    """Rows were submitted to the provider's Batch API and are still running (``--no-wait``)."""

    exit_code = 10


class EndpointDown(RunStopped):
    """No request has succeeded for ``down_after`` seconds: the endpoint is unreachable."""

    exit_code = 69  # EX_UNAVAILABLE


class Interrupted(RunStopped):
    """The run received SIGINT or SIGTERM."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
