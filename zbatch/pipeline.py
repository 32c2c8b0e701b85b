"""One row's life, shared by every way of running a job and by the dry run.

    input item ─> id ─> repeated? done? ─> render ─> Work ─(a dispatcher sends it)─>
        answer ─> accept (labels, JSON fields) ─> result row │ Failure ─> error row

The online runner, batch mode and the plan all drive rows through :class:`RowPipeline`, so
they cannot disagree on which rows are sent or how an answer becomes a row. The pipeline
counts into :class:`~zbatch.stats.Stats` and adds rows to two sinks (the part writers of a
run, or the plan's tally); when to commit is the dispatcher's business.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from . import prompt
from .answers import NotJson, json_field_value, normalize_label, parse_json_object
from .errors import redact
from .idset import IdSet
from .job.settings import Job
from .outcome import Failure, Scope, Success, storable_text
from .readers.base import DoneRows, RawRow
from .schema import keep_caster
from .stats import Stats
from .store import ResumeState
from .store.state import RetryFailed

Row = tuple[Any, ...]
# Rows that need no request are handled between sends; every so many of them the pipeline
# yields None so that an event loop driving it gets a turn.
YIELD_EVERY = 512


@dataclass(frozen=True, slots=True)
class Work:
    """One row ready to send."""

    id: str
    body: bytes
    tokens: int  # estimated prompt + completion tokens, for TPM pacing and budgets
    keep: tuple[Any, ...]
    gold: str | None = None  # the row's reference label (labels.gold_column), normalised
    answer_tokens: int = 0  # the body's max_tokens (0: unbounded), part of ``tokens``
    model: str = ""  # the body's model (a batch file holds one model's rows)


class Sink(Protocol):
    """Where rows go: a run's part writer, or the plan's tally."""

    def add(self, row: Row) -> None: ...


class RowPipeline:
    """Turns input items into Work, and answers or failures into rows, counting as it goes."""

    def __init__(
        self,
        job: Job,
        *,
        state: ResumeState,
        stats: Stats,
        results: Sink,
        errors: Sink,
        schema: pa.Schema,
        retry_failed: RetryFailed = False,
        in_shard: Callable[[str], bool] | None = None,
        secret: str = "",
    ) -> None:
        self.job = job
        self.state = state
        self.stats = stats
        self.results = results
        self.errors = errors
        self.retry_failed = retry_failed
        self._in_shard = in_shard
        self._secret = secret
        self.on_added: Callable[[], None] = lambda: None  # a dispatcher's cue to check buffers
        self.warn: Callable[[str], None] = lambda message: None  # the run's log, once open
        self._seen = IdSet(capacity=stats.total or 4096)  # sized once: no growth transients
        self._keep_casts = [keep_caster(schema.field(name).type) for name in job.keep_columns]

    def is_done(self, row_id: str) -> bool:
        return self.state.is_done(row_id, retry_failed=self.retry_failed)

    # --- input side -------------------------------------------------------------------------

    def works(
        self, items: Iterator[RawRow | DoneRows], *, limit: int | None = None
    ) -> Iterator[Work | None]:
        """Work for each row to send; None now and then, as a turn for an event loop.

        Rows that need no request (done before, repeated, unreadable) are dealt with on the
        way. ``limit`` ends it after that many rows to send (a paid sample; the next run goes
        on with the rest). A file that breaks off part-way raises JobError from here."""
        quiet = sent = 0
        for item in items:
            if sent == limit:
                self.stats.limited = True
                return
            if isinstance(item, DoneRows):
                self.skip_done(item)
                yield None
                continue
            work = self.prepare(item)
            if work is not None:
                quiet, sent = 0, sent + 1
                yield work
            elif (quiet := quiet + 1) % YIELD_EVERY == 0:
                yield None

    def prepare(self, raw: RawRow) -> Work | None:
        """Turn an input row into Work; None when it is done already or cannot be sent.

        Done-ness is checked before rendering: a resume over a million finished rows then
        costs a read of their ids, not a million renders."""
        data = raw.data
        row_id = None if data is None else prompt.row_id(data, self.job.id_column)
        key = row_id or f"?{raw.where}"  # a row without an id is logged under where it is
        if self._in_shard is not None and not self._in_shard(key):
            return None  # another shard's row
        self.stats.input_rows += 1
        if data is None:
            self.row_error(key, "invalid_input", raw.problem or "unreadable row")
            return None
        if row_id is None:
            column = self.job.id_column or "id"
            self.row_error(key, "missing_id", f"{raw.where} has no usable '{column}' value")
            return None
        if not row_id.isascii() and storable((row_id,))[0] != row_id:
            where = f"?{raw.where}"  # the id itself cannot be stored: logged under where it is
            self.row_error(where, "invalid_input", f"{raw.where}: the id cannot be encoded")
            return None
        if not self._seen.add(row_id):
            self._repeated(row_id, raw.where)
            return None
        if self.is_done(row_id):
            self.stats.skipped += 1
            return None
        try:
            body = prompt.render(data, self.job)
            encoded = json.dumps(body, ensure_ascii=False).encode()
        except prompt.RenderError as exc:
            self.row_error(row_id, "template_error", f"{raw.where}: {exc}")
            return None
        except (UnicodeEncodeError, ValueError, TypeError, RecursionError) as exc:
            # e.g. a lone surrogate escape ("\ud800") is valid JSON but cannot be sent
            self.row_error(row_id, "invalid_input", f"{raw.where} cannot be sent: {exc}")
            return None
        answer_tokens = int(body.get("max_tokens") or 0)
        tokens = prompt.estimate_tokens(body) + answer_tokens
        keep = self.keep_values(data, raw.where)
        model = body.get("model") or self.job.effective_model
        return Work(row_id, encoded, tokens, keep, self.gold(data), answer_tokens, model)

    def keep_values(self, data: dict[str, Any], where: str) -> tuple[Any, ...]:
        """The keep_columns of an input row, fitted to their result columns.

        A value of another type than its column's (JSONL lets a column change type between
        rows or files) is stored as null: it is counted per column and the first one warned
        about in run.log, never dropped silently. (Widening the column instead would change
        the schema of an OUTDIR that already holds parts.)"""
        if not self._keep_casts:  # most jobs keep no column; this runs for every row
            return ()
        values = []
        for cast, name in zip(self._keep_casts, self.job.keep_columns, strict=True):
            value = data.get(name)
            fitted = cast(value)
            if fitted is None and value is not None:
                mistyped = self.stats.keep_mistyped
                if not mistyped[name]:
                    self.warn(
                        f"keep column '{name}': {where} holds a {type(value).__name__}, not "
                        "the column's type; stored as null (summary.json counts such rows)"
                    )
                mistyped[name] += 1
            values.append(fitted)
        return tuple(values)

    def gold(self, data: dict[str, Any]) -> str | None:
        """The row's reference label (labels.gold_column), normalised, or None."""
        column = self.job.gold_column
        value = None if column is None else data.get(column)
        return None if value is None else gold_label(value, self.job.choices)

    def skip_done(self, done: DoneRows) -> None:
        """Count rows done before as skipped, still noticing ids that repeat."""
        for offset, row_id in enumerate(done.ids):
            if self._in_shard is not None and not self._in_shard(row_id):
                continue
            self.stats.input_rows += 1
            if self._seen.add(row_id):
                self.stats.skipped += 1
            else:
                self._repeated(row_id, done.where(offset))

    def _repeated(self, row_id: str, where: str) -> None:
        """A row whose id an earlier row had; logged unless an earlier run logged it."""
        if row_id in self.state.duplicates_logged:
            return
        self.fail(row_id, Failure("duplicate_id", Scope.ROW, f"{where} repeats id {row_id!r}"), 0)

    def row_error(self, row_id: str, error_type: str, message: str) -> None:
        """A row that cannot be sent at all (unless an earlier run settled its id)."""
        if self.state.is_done(row_id, retry_failed=False):
            self.stats.skipped += 1
            return
        self.fail(row_id, Failure(error_type, Scope.ROW, message), 0)

    # --- answer side ------------------------------------------------------------------------

    def count_usage(self, answer: Success) -> None:
        stats = self.stats
        stats.prompt_tokens += answer.prompt_tokens or 0
        stats.completion_tokens += answer.completion_tokens or 0
        stats.cached_tokens += answer.cached_tokens or 0
        stats.usage_malformed += answer.usage_malformed

    def accept(self, work: Work, answer: Success, attempts: int) -> Failure | None:
        """Check the answer against labels / JSON and add its row; a Failure if it does not
        fit (the dispatcher decides whether to ask again or :meth:`fail`)."""
        job = self.job
        extra: list[Any] = []
        if job.choices:
            label = normalize_label(answer.content, job.choices)
            if label is None:
                shown = redact(answer.content[:80])
                return Failure(
                    "invalid_label", Scope.ROW, f"answer {shown!r} is not one of the choices"
                )
            extra.append(label)
        if job.response_format == "json_object":
            try:
                obj = parse_json_object(answer.content)
            except NotJson as exc:
                return Failure("invalid_json", Scope.ROW, str(exc))
            extra.append(json.dumps(obj, ensure_ascii=False))
            for name, kind in job.json_fields:
                value = json_field_value(obj.get(name), kind)
                if value is None:  # counted, so a null is never silent
                    missing = obj.get(name) is None
                    (self.stats.json_missing if missing else self.stats.json_mistyped)[name] += 1
                extra.append(value)
        if answer.finish_reason in ("length", "model_context_window_exceeded"):
            self.stats.truncated += 1
        self.results.add(result_row(work.id, answer, attempts, [*extra, *work.keep]))
        self.stats.ok += 1
        if job.choices:
            self.stats.labels[extra[0]] += 1
            if work.gold is not None:
                self.stats.gold.pairs[work.gold, extra[0]] += 1
        self.on_added()
        return None

    def fail(
        self,
        row_id: str,
        failure: Failure,
        attempts: int,
        *,
        answer: str | None = None,
    ) -> None:
        """Log a failed row. A fatal or quota failure is not the row's fault: it stays
        pending (retryable, not counted as failed). ``answer`` keeps a paid answer that did
        not fit."""
        message = redact(failure.message, self._secret)
        pending = failure.scope in (Scope.FATAL, Scope.QUOTA)
        flag = pending or failure.retryable
        self.errors.add(error_row(row_id, failure, attempts, flag, message, answer))
        self.on_added()
        if not pending:
            self.stats.count_failure(failure.error_type)

    def unstorable(self, row: Row, reason: str) -> None:
        """A result row whose values do not fit the result schema: an error row instead,
        keeping the answer as text, so the paid answer is neither lost nor bought again."""
        self.stats.ok -= 1
        failure = Failure("invalid_response", Scope.ROW, f"answer cannot be stored: {reason}")
        self.fail(row[0], failure, row[10], answer=_text(row[1]))


def gold_label(value: Any, choices: tuple[str, ...]) -> str:
    """A reference label as the choice it names, or as written when it names none."""
    text = str(value)
    return normalize_label(text, choices) or text


def result_row(row_id: str, answer: Success, attempts: int, tail: list[Any]) -> Row:
    """A result row in schema order; ``tail`` holds label/json/keep values in order."""
    return (
        row_id,
        answer.content,
        answer.reasoning_content,
        answer.finish_reason,
        answer.model,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.total_tokens,
        answer.cached_tokens,
        answer.request_id,
        attempts,
        answer.latency_ms,
        now_ms(),
        *tail,
    )


def error_row(
    row_id: str,
    failure: Failure,
    attempts: int,
    retryable: bool,
    message: str,
    answer: str | None = None,
) -> Row:
    """An error row in ERROR_SCHEMA order (``message`` already redacted)."""
    return (
        row_id,
        failure.error_type,
        failure.status_code,
        failure.error_code,
        message,
        attempts,
        retryable,
        now_ms(),
        answer,
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


async def commit(pipeline: RowPipeline, results: Any, errors: Any) -> None:
    """Commit both buffers as part files (in a worker thread), shielded from cancellation.

    Result rows that do not fit the schema come back from the writer and become error rows
    before the error buffer is committed. When a write fails, its rows go back to the front
    of their buffer: nothing taken is lost, and the caller may try again."""
    import anyio  # with the run: readers of an OUTDIR (status) import this module too

    with anyio.CancelScope(shield=True):
        rows = results.take()
        try:
            unstorable = await anyio.to_thread.run_sync(results.commit, rows)
        except BaseException:
            results.rows[:0] = rows
            raise
        for row, reason in unstorable:
            pipeline.unstorable(row, reason)
        rows = errors.take()
        try:
            odd = await anyio.to_thread.run_sync(errors.commit, rows)
            if odd:  # an error row must never be lost: its text is made storable
                await anyio.to_thread.run_sync(errors.commit, [storable(row) for row, _ in odd])
        except BaseException:
            errors.rows[:0] = rows
            raise


def storable(row: Row) -> Row:
    """An error row whose text can be stored: what UTF-8 cannot hold becomes U+FFFD."""
    return tuple(storable_text(value) if isinstance(value, str) else value for value in row)
