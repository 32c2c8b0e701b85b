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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from . import prompt
from .answers.checks import normalize_label
from .answers.reading import AnswerReader, Reading
from .answers.schema import repair_message
from .errors import redact
from .idset import IdSet
from .job.settings import Job
from .outcome import Failure, Scope, Success, storable_text
from .readers.base import DoneRows, RawRow
from .schema import keep_caster
from .stats import Stats
from .store import ResumeState
from .store.parts import Held
from .store.state import RetryFailed

if TYPE_CHECKING:
    from .idset import Slots
    from .store.cache import ResponseCache

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
    cache_key: bytes | None = None  # the row's own request in the response cache
    repairs: int = 0  # requests that fed a validation error back (``body`` then grows)


@dataclass(slots=True)
class _Samples:
    """The answers to a row whose samples are separate requests, as they come in."""

    answers: list[Success]
    settled: int = 0
    failed: bool = False


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
        cache: ResponseCache | None = None,
    ) -> None:
        """``cache``: the response cache a live run reads and fills (None: no cache)."""
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
        # The ids met in this pass that were not done before (the done ones are marked in
        # state.succeeded): sized once, no growth transients.
        self._seen = IdSet(capacity=max((stats.total or 0) - len(state.succeeded), 4096))
        self._looked_up: tuple[Sequence[str] | None, Slots | None] = (None, None)
        self._keep_casts = [keep_caster(schema.field(name).type) for name in job.keep_columns]
        self.reader = AnswerReader(job, stats)
        self.cache = cache
        self._endpoint = job.base_url.rstrip("/") + job.profile.chat_path
        # Answers to put in the cache once the part holding their row is committed: id ->
        # (key, answers, model).
        self.uncached: dict[str, tuple[bytes, list[dict[str, Any]], str]] = {}
        # samples > 1 on an endpoint without "n": each sample is its own request.
        self._split = job.samples if job.samples > 1 and not job.samples_in_one_request else 1
        self._samples: dict[str, _Samples] = {}

    def is_done(self, row_id: str) -> bool:
        return self.state.is_done(row_id, retry_failed=self.retry_failed)

    def all_done(self, ids: Sequence[str]) -> bool:
        """Whether a block of rows read ids-only was all done before (the readers ask).

        Where its ids are in the done ids is kept for :meth:`skip_done` (the block a reader
        finds done comes next, as DoneRows of the same list): one lookup a block, not two."""
        slots = self.state.succeeded.slots_of(ids)
        self._looked_up = (ids, slots)
        return self.state.all_done(ids, retry_failed=self.retry_failed, answered=slots >= 0)

    # --- input side -------------------------------------------------------------------------

    def works(
        self, items: Iterator[RawRow | DoneRows], *, max_rows: int | None = None
    ) -> Iterator[Work | None]:
        """Work for each row to send; None now and then, as a turn for an event loop.

        Rows that need no request (done before, repeated, unreadable) are dealt with on the
        way. ``max_rows`` ends it after that many rows to send (a paid sample; the next run goes
        on with the rest; rows answered from the response cache count). A file that breaks
        off part-way raises JobError from here."""
        quiet = sent = 0
        for item in items:
            if sent == max_rows:
                self.stats.limited = True
                return
            if isinstance(item, DoneRows):
                self.skip_done(item)
                yield None
                continue
            hits = self.stats.cache_hits
            work = self.prepare(item)
            if work is not None:
                quiet, sent = 0, sent + 1
                if self._split > 1:  # the samples of a row, when each is a request
                    self._samples[work.id] = _Samples([])
                for _ in range(self._split):
                    yield work
            else:
                # A row answered from the cache counts toward the limit: the same --limit
                # sample run again into a new OUTDIR is the same rows, not the next ones.
                sent += self.stats.cache_hits - hits
                if (quiet := quiet + 1) % YIELD_EVERY == 0:
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
        if not self._first(row_id):
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
        answer_tokens = int(body.get("max_tokens") or 0) * int(body.get("n") or 1)
        tokens = prompt.estimate_tokens(body) + answer_tokens
        keep = self.keep_values(data, raw.where)
        model = body.get("model") or self.job.effective_model
        work = Work(row_id, encoded, tokens, keep, self.gold(data), answer_tokens, model)
        cache_key = self.cache_key(body)
        if cache_key is not None:
            work = replace(work, cache_key=cache_key)
            if self._from_cache(work):
                return None
        return work

    def cache_key(self, body: dict[str, Any]) -> bytes | None:
        """The request's key in the response cache; None without a cache, or for a request
        whose answers it does not keep (not deterministic, unless cache = "all")."""
        if self.cache is None:
            return None
        job = self.job
        return self.cache.key_for(
            body, endpoint=self._endpoint, samples=job.samples, every=job.cache == "all"
        )

    def _from_cache(self, work: Work) -> bool:
        """Answer a row from the response cache; True when it was (a hit is not a purchase:
        nothing is charged; the summary counts what it saved)."""
        assert self.cache is not None and work.cache_key is not None
        stored = self.cache.get(work.cache_key)
        if stored is None:
            return False
        try:
            answers = [cached_answer(item) for item in stored]
        except (TypeError, KeyError):
            return False  # not an entry this version wrote: asked again, and replaced
        if self._accept_answers(work, answers, 0, cached=True) is not None:
            return False  # the job reads answers differently now (labels): asked again
        self.stats.count_cache_hit(answers)
        return True

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
        """Count rows done before as skipped, still noticing ids that repeat (the block's
        ids go into the repeated-id set at once)."""
        ids: Sequence[str] = done.ids
        offsets: Sequence[int] = range(len(ids))
        if self._in_shard is not None:  # only this shard's rows, each at its own offset
            offsets = [o for o, row_id in enumerate(done.ids) if self._in_shard(row_id)]
            ids = [done.ids[o] for o in offsets]
        looked_up, slots = self._looked_up
        repeats = self._first_many(ids, slots if looked_up is ids else None)
        self.stats.input_rows += len(ids)
        self.stats.skipped += len(ids) - len(repeats)
        for at in repeats:
            self._repeated(ids[at], done.where(offsets[at]))

    def _first(self, row_id: str) -> bool:
        """Whether this pass over the input meets ``row_id`` for the first time."""
        first = self.state.succeeded.meet(row_id) if self.state.succeeded else None
        return self._seen.add(row_id) if first is None else first

    def _first_many(self, ids: Sequence[str], slots: Slots | None) -> list[int]:
        """:meth:`_first` of a block of ids (``slots``: where they are in the done ids, if
        known): the positions of those met before, in order."""
        if not self.state.succeeded:
            return self._seen.add_many(ids)
        done, repeats = self.state.succeeded.meet_many(ids, slots)
        if done.all():
            return repeats
        rest = [at for at, found in enumerate(done.tolist()) if not found]
        again = self._seen.add_many([ids[at] for at in rest])
        return sorted(repeats + [rest[i] for i in again])

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
        """Check the answer (labels, JSON, schema) and add its row; a Failure if it does not
        fit (the dispatcher decides whether to ask again, :meth:`again`, or :meth:`fail`)."""
        if self._split > 1:
            self._accept_sample(work, answer, attempts)
            return None
        return self._accept_answers(work, [answer], attempts)

    def again(self, work: Work, answer: Success, failure: Failure, asked: int) -> Work | None:
        """The request to send after an answer that does not fit, if it is asked again:
        the same one for a label or JSON answer (labels.retries times), for a schema answer
        the conversation so far plus the validation error (output.repair_attempts times)."""
        if failure.error_type in ("invalid_label", "invalid_json"):
            return work if asked < self.job.label_retries else None
        if failure.error_type != "invalid_output" or asked >= self.job.repair_attempts:
            return None
        body = json.loads(work.body)
        body["messages"] = [
            *body["messages"],
            {"role": "assistant", "content": answer.content},
            {"role": "user", "content": repair_message(failure.message)},
        ]
        self.stats.repairs += 1
        tokens = prompt.estimate_tokens(body) + work.answer_tokens
        encoded = json.dumps(body, ensure_ascii=False).encode()
        return replace(work, body=encoded, tokens=tokens, repairs=work.repairs + 1)

    def _accept_sample(self, work: Work, answer: Success, attempts: int) -> None:
        """One of a row's sample requests answered: the row is added with the last one."""
        group = self._samples[work.id]
        group.answers.append(answer)
        group.settled += 1
        if group.settled < self._split:
            return
        del self._samples[work.id]
        if not group.failed:
            self._accept_answers(work, group.answers, attempts)

    def _accept_answers(
        self, work: Work, answers: list[Success], attempts: int, *, cached: bool = False
    ) -> Failure | None:
        """Add the row of one answer, or of a row's samples by majority; the Failure when it
        does not fit. A live row none of whose samples fits is logged as failed here (asking
        again would not be one request), keeping the first answer."""
        contents = tuple(a.content for a in answers)
        if len(answers) == 1:
            contents += answers[0].alternatives
        if len(contents) < self.job.samples:  # votes would count fewer answers than asked
            return Failure("invalid_response", Scope.ROW, few_choices(self.job, len(contents)))
        if self.job.samples == 1:
            reading = self.reader.read(contents[0])
            if isinstance(reading, Failure):
                return reading
            self._add(work, answers[0], attempts, reading, [], answers, cached=cached)
            return None
        readings = [self.reader.read(content) for content in contents]
        vote = self.reader.vote(readings)
        if vote is None:
            first = readings[0]
            assert isinstance(first, Failure)
            if cached:
                return first
            self.fail(work.id, first, attempts, answer=contents[0])
            return None
        answer = combined(answers, vote.reading.content)
        tail = [vote.votes, vote.agreement]
        self._add(work, answer, attempts, vote.reading, tail, answers, cached=cached)
        return None

    def _add(
        self,
        work: Work,
        answer: Success,
        attempts: int,
        reading: Reading,
        samples: list[Any],
        answers: list[Success],
        *,
        cached: bool = False,
    ) -> None:
        """Add a result row; its answers wait to enter the cache until the row is committed."""
        if answer.finish_reason in ("length", "model_context_window_exceeded"):
            self.stats.truncated += 1
        extra = self.reader.columns(reading)
        row = result_row(work.id, answer, attempts, [*extra, *samples, *work.keep], cached)
        self.results.add(row)
        stats = self.stats
        stats.ok += 1
        if work.repairs:
            stats.repaired += 1
        if reading.label is not None:
            stats.labels[reading.label] += 1
            if work.gold is not None:
                stats.gold.pairs[work.gold, reading.label] += 1
        if work.cache_key is not None and not cached:
            stored = [cache_entry(a) for a in answers]
            self.uncached[work.id] = (work.cache_key, stored, work.model)
        self.on_added()

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
        group = self._samples.get(row_id) if self._split > 1 else None
        if group is not None:  # one of a row's sample requests: the row fails once
            group.settled += 1
            logged, group.failed = group.failed, True
            if group.settled >= self._split:
                del self._samples[row_id]
            if logged:
                return
        message = redact(failure.message, self._secret)
        pending = failure.scope in (Scope.FATAL, Scope.QUOTA)
        flag = pending or failure.retryable
        self.errors.add(error_row(row_id, failure, attempts, flag, message, answer))
        self.on_added()
        if not pending:
            self.stats.count_failure(failure.error_type)

    async def remember(self, committed: Iterable[str]) -> None:
        """Put the answers of committed rows (their ids) in the response cache (rows that came back
        unstorable were taken out of ``uncached`` by :meth:`unstorable`), and note the
        entries that answered rows since the last commit as used."""
        cache = self.cache
        if cache is None:
            return
        import anyio

        uncached = self.uncached
        entries = [uncached.pop(row_id) for row_id in committed if row_id in uncached]
        if not entries and not cache.used:
            return
        problem = await anyio.to_thread.run_sync(cache.store, entries)
        if problem is not None:  # the cache only saves money: the run goes on without it
            self.warn(problem)

    def unstorable(self, row: Row, reason: str) -> None:
        """A result row whose values do not fit the result schema: an error row instead,
        keeping the answer as text, so the paid answer is neither lost nor bought again."""
        self.stats.ok -= 1
        self.uncached.pop(row[0], None)
        failure = Failure("invalid_response", Scope.ROW, f"answer cannot be stored: {reason}")
        self.fail(row[0], failure, row[10], answer=_text(row[1]))


def few_choices(job: Job, got: int) -> str:
    """Why an answer with fewer choices than ``samples`` is refused, and what to set."""
    return (
        f"asked for {job.samples} answers with n, got {got}: the endpoint ignores n; set "
        "endpoint.n_choices = false (--no-n-choices: one request per sample), then run the "
        "same command"
    )


def gold_label(value: Any, choices: tuple[str, ...]) -> str:
    """A reference label as the choice it names, or as written when it names none."""
    text = str(value)
    return normalize_label(text, choices) or text


def result_row(
    row_id: str, answer: Success, attempts: int, tail: list[Any], cached: bool = False
) -> Row:
    """A result row in schema order; ``tail`` holds label/json/samples/keep values in order."""
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
        cached,
        *tail,
    )


# The fields of an answer the response cache keeps (everything but the attempt's latency).
_CACHED_FIELDS = (
    "content",
    "reasoning_content",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "request_id",
)


def cache_entry(answer: Success) -> dict[str, Any]:
    entry = {name: getattr(answer, name) for name in _CACHED_FIELDS}
    if answer.alternatives:
        entry["alternatives"] = list(answer.alternatives)
    return entry


def cached_answer(entry: dict[str, Any]) -> Success:
    """An answer as the cache holds it (no latency: no attempt was made)."""
    if not isinstance(entry.get("content"), str):
        raise TypeError("an answer without content")
    values = {name: entry[name] for name in _CACHED_FIELDS}
    return Success(**values, latency_ms=None, alternatives=tuple(entry.get("alternatives") or ()))


def combined(answers: list[Success], content: str) -> Success:
    """One answer standing for a row's samples: the majority's content, all their tokens."""
    first = answers[0]
    if len(answers) == 1:
        return replace(first, content=content)

    def total(name: str) -> int | None:
        values = [getattr(a, name) for a in answers]
        return None if all(v is None for v in values) else sum(v or 0 for v in values)

    latencies = [a.latency_ms for a in answers if a.latency_ms is not None]
    return replace(
        first,
        content=content,
        prompt_tokens=total("prompt_tokens"),
        completion_tokens=total("completion_tokens"),
        total_tokens=total("total_tokens"),
        cached_tokens=total("cached_tokens"),
        latency_ms=max(latencies) if latencies else None,
        alternatives=(),
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
        held = results.take()
        try:
            unstorable = await anyio.to_thread.run_sync(results.commit, held)
        except BaseException:
            results.give_back(held)
            raise
        for row, reason in unstorable:
            pipeline.unstorable(row, reason)
        await pipeline.remember(held.ids())
        held = errors.take()
        try:
            odd = await anyio.to_thread.run_sync(errors.commit, held)
        except BaseException:
            errors.give_back(held)
            raise
        if odd:  # an error row must never be lost: its text is made storable
            fixed = Held(rows=[storable(row) for row, _ in odd])
            try:
                await anyio.to_thread.run_sync(errors.commit, fixed)
            except BaseException:
                errors.give_back(fixed)  # only these: the others are in a part already
                raise


def storable(row: Row) -> Row:
    """An error row whose text can be stored: what UTF-8 cannot hold becomes U+FFFD."""
    return tuple(storable_text(value) if isinstance(value, str) else value for value in row)
