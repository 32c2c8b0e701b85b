"""What earlier runs settled, read from the id columns of the committed parts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..idset import IdSet
from ..schema import ERROR_TYPES
from .parts import Parts

# What --retry-failed re-sends: every non-retryable error (True), or those of some types.
RetryFailed = bool | Collection[str]


def retry_failed_problem(retry_failed: RetryFailed) -> str | None:
    """What is wrong with the error types to send again (None: nothing): each must be one of
    ERROR_TYPES, and a set must name at least one."""
    if isinstance(retry_failed, bool):
        return None
    unknown = sorted(set(retry_failed) - set(ERROR_TYPES))
    if unknown or not retry_failed:
        return f"unknown error type(s) {', '.join(unknown) or 'none named'}; known: " + ", ".join(
            ERROR_TYPES
        )
    return None


@dataclass
class ResumeState:
    """What earlier runs already settled, keyed by id."""

    succeeded: IdSet = field(default_factory=IdSet)  # ids with a result (their hashes)
    latest_error: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (type, retry)
    duplicates_logged: set[str] = field(default_factory=set)
    duplicate_rows: int = 0  # input rows logged as repeating an id (its id answered once)

    def __bool__(self) -> bool:
        """Whether earlier runs settled any row (a first run's state is empty)."""
        return bool(self.latest_error) or len(self.succeeded) > 0

    def is_done(self, row_id: str, *, retry_failed: RetryFailed = False) -> bool:
        if row_id in self.succeeded:
            return True
        latest = self.latest_error.get(row_id)
        if latest is None or latest[1]:
            return False
        if isinstance(retry_failed, bool):
            return not retry_failed
        return latest[0] not in retry_failed

    def all_done(
        self,
        ids: Sequence[str],
        *,
        retry_failed: RetryFailed = False,
        answered: npt.NDArray[np.bool_] | None = None,
    ) -> bool:
        """Whether every one of ``ids`` is done: a block of them looked up at once (a resume
        over ten million finished rows asks this of every block it reads). ``answered``:
        which of them are in ``succeeded``, when the caller has looked them up already."""
        if answered is None:
            answered = self.succeeded.contains_many(ids)
        if answered.all():
            return True
        return all(
            self.is_done(ids[i], retry_failed=retry_failed)
            for i in (~answered).nonzero()[0].tolist()
        )

    def open_errors(self) -> dict[str, tuple[str, bool]]:
        """The latest error of each id that has no result: what counts as failed."""
        return {i: e for i, e in self.latest_error.items() if i not in self.succeeded}

    @property
    def failed(self) -> int:
        """Ids whose latest outcome is an error (retryable or not): what a run's summary
        counts as failed."""
        return len(self.open_errors())

    @property
    def failed_retryable(self) -> int:
        """Ids whose latest outcome is an error the next run retries."""
        return sum(1 for _, retryable in self.open_errors().values() if retryable)


def load_state(results: Parts, errors: Parts) -> ResumeState:
    """Read only the id-level columns of the committed parts, a slice at a time.

    The result ids go into an IdSet sized once from the parts' footers (no growth on the
    way), half full: 64-bit hashes, ~16 MB per million ids, where a set of Python strings
    took ~95 MB;
    slice by slice, Arrow's copy and the slice's Python strings are one slice's, not all of
    them (docs/performance.md, "10,000,000 rows").
    """
    done = sum(rows for *_, rows in results.row_groups())
    # Half full, not 3/4 (+5 MB a million): every input row of a resume is looked up here,
    # and shorter runs of taken slots make a 10M resume ~0.5 s faster.
    state = ResumeState(succeeded=IdSet(done * 3 // 2))
    for batch in results.batches(["id"]):
        state.succeeded.update(batch.column(0).to_pylist())
    _read_errors(errors, state)
    return state


def count_state(results: Parts, errors: Parts) -> tuple[int, ResumeState]:
    """What `status` counts: the ids with a result, and a ResumeState whose ``succeeded``
    holds only those of them that also have an error (all its error figures look at).

    The result ids are read a batch at a time into an IdSet (64-bit hashes, ~11 MB per
    million): Arrow's count_distinct over the whole id column took ~170 MB and 2.5 s per
    million ids (docs/performance.md, "10,000,000 rows"). A result id also in the error log
    (the usually few errored ids are looked up by hash, then checked exactly) goes into
    ``succeeded``.
    """
    state = ResumeState()
    _read_errors(errors, state)
    if not results.names:
        return 0, state
    errored = IdSet(len(state.latest_error))
    errored.update(list(state.latest_error))
    done = IdSet(sum(rows for *_, rows in results.row_groups()))
    for batch in results.batches(["id"]):
        ids = batch.column(0).to_pylist()
        done.update(ids)
        if state.latest_error:
            maybe = errored.contains_many(ids).nonzero()[0].tolist()
            state.succeeded.update([ids[i] for i in maybe if ids[i] in state.latest_error])
    return len(done), state


def _read_errors(errors: Parts, state: ResumeState) -> None:
    """Each id's latest error from the error log (read in commit order) into ``state``."""
    for batch in errors.batches(["id", "error_type", "retryable"]):
        ids, types, flags = (batch.column(i).to_pylist() for i in range(3))
        for row_id, kind, retryable in zip(ids, types, flags, strict=True):
            if kind == "duplicate_id":
                state.duplicates_logged.add(row_id)
                state.duplicate_rows += 1
            else:
                state.latest_error[row_id] = (kind, bool(retryable))
