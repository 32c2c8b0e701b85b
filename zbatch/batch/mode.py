"""Batch mode: a job's pending rows through the provider's Batch API, exactly once.

    pending Work ─> batch files ─> ledger "written" ─> upload ─> "uploaded" ─> create ─>
    "created" ─> poll (poll_seconds ± 20 %) ─> final status ─> download output and error
    files ─> pipeline.accept / fail (labels, JSON fields, error classes as live) ─> commit
    parts ─> "collected"

Every step is recorded in OUTDIR/batches/ (:mod:`zbatch.batch.ledger`) before the next one
starts, so a run killed anywhere re-attaches on the next run: a file that may have been
uploaded is looked up by its name, a batch that may have been created by its input file,
and rows of open batches are never packed again. A batch that ends ``expired``,
``cancelled`` or ``failed`` leaves its unanswered rows pending: the next run submits them
again (``--finish-online`` sends them live instead).

Stopping: SIGINT / SIGTERM (with ``handle_signals``) stop at once, exit 130 / 143; batches
keep running at the provider and the next run collects them. A collection in progress is
shielded, so answers downloaded are committed before the run ends.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from .. import prompt
from ..errors import BatchPending, Interrupted, RunStopped, ZbatchError
from ..job import Job
from ..outcome import Failure, Scope, Success
from ..pipeline import RowPipeline, Work, commit
from ..progress import Progress
from ..providers import Provider
from ..runner import watch_signals
from ..source import open_input
from ..store import PartWriter
from .api import BatchApi, BatchInfo
from .files import BatchFile, BatchFileWriter, LineTooBig, chat_endpoint, id_map
from .ledger import (
    ABANDONED,
    COLLECTED,
    CREATED,
    FINAL_STATUSES,
    UPLOADED,
    WRITTEN,
    Ledger,
    LedgerStorage,
    Submission,
)

POLL_JITTER = 0.2
# OpenAI puts the requests an expired or cancelled batch never ran in its error file with
# these codes: they were not answered, so they are pending, not failed.
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})


class RowsLeft(RunStopped):
    """Batches ended (expired / cancelled / failed) leaving rows unanswered (exit 1)."""

    exit_code = 1


def line_outcome(line: dict[str, Any], provider: Provider) -> Success | Failure | None:
    """What one output or error line says about its row (read and classified by the
    provider's rules, as a live answer is); None when the row was never run."""
    response = line.get("response")
    if not isinstance(response, dict):
        error = line.get("error")
        if not isinstance(error, dict):
            error = {}
        code = error.get("code")
        if code in NOT_RUN_CODES:
            return None
        message = str(error.get("message") or "the batch refused this line")
        return provider.classify(400, None if code is None else str(code), message)
    status = response.get("status_code")
    body = response.get("body")
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if status == 200:
        return provider.parse_answer(raw, None)
    code, message = provider.error_details(raw)
    status = status if isinstance(status, int) else 500
    return provider.classify(status, code, message or f"HTTP {status}")


class BatchMode:
    """Submits, polls and collects a job's batches; one instance per run."""

    def __init__(
        self,
        job: Job,
        *,
        pipeline: RowPipeline,
        works: Iterator[Work | None],
        results: PartWriter,
        errors: PartWriter,
        api: BatchApi,
        storage: LedgerStorage,
        progress: Progress,
        log: logging.Logger,
        handle_signals: bool = False,
        wait: bool = True,
    ) -> None:
        self.job = job
        self.pipeline = pipeline
        self.stats = pipeline.stats
        self.api = api
        self.ledger = Ledger(storage)
        self.progress = progress
        self.log = log
        self._works = works
        self._writers = (results, errors)
        self._handle_signals = handle_signals
        self._wait = wait
        self._endpoint, self._window = chat_endpoint(job.profile)
        self._fingerprint = job.fingerprint()
        self.stop_reason: ZbatchError | None = None
        self.unanswered = 0
        self._scope = anyio.CancelScope()

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> ZbatchError | None:
        try:
            async with anyio.create_task_group() as helpers:
                if self._handle_signals:
                    helpers.start_soon(self._watch_signals)
                helpers.start_soon(self._tick)
                with self._scope:
                    try:
                        await self._dispatch()
                    except ZbatchError as exc:  # the Batch API refused, or a part write failed
                        self.stop(exc)
                helpers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.api.aclose()
                try:
                    await commit(self.pipeline, *self._writers)
                except ZbatchError as exc:
                    self.stop_reason = exc
                    self.stats.outcome = f"stopped: {exc}"
                self.progress.close(self.stats)
        if self.stop_reason is None and self.unanswered:
            self.stop(
                RowsLeft(
                    f"{self.unanswered} rows were left unanswered by expired, cancelled or "
                    "failed batches; run the same command to submit them again, or add "
                    "--finish-online to send them live"
                )
            )
        if self.stop_reason is None:
            self.stats.outcome = "finished" if not self.stats.failed else "finished with errors"
        return self.stop_reason

    def stop(self, reason: ZbatchError) -> None:
        """Stop; the first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stats.outcome = f"stopped: {reason}"
        self.log.warning("stopping: %s", reason)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    async def _dispatch(self) -> None:
        for submission in self.ledger.submissions():
            if submission.state in (WRITTEN, UPLOADED):
                await self._reattach(submission)
        await self._submit()
        if not self.stopping:
            await self._collect_all()

    # --- submitting -----------------------------------------------------------------------

    async def _submit(self) -> None:
        """Pack every pending row not held by an open batch into files and submit them."""
        held = self.ledger.open_ids(self._fingerprint)
        job = self.job
        with tempfile.TemporaryDirectory(prefix="zbatch-batch-") as scratch:
            writer = BatchFileWriter(
                Path(scratch),
                endpoint=self._endpoint,
                max_rows=job.batch_max_rows,
                max_bytes=job.batch_max_bytes,
            )
            try:
                for work in self._works:
                    if work is None:
                        await anyio.lowlevel.checkpoint()
                        continue
                    if work.id in held:
                        continue  # an open batch holds it: collected, not sent again
                    model = json.loads(work.body).get("model") or job.effective_model
                    try:
                        full = writer.add(work.id, model, work.body)
                    except LineTooBig as exc:
                        self.pipeline.fail(work.id, Failure("bad_request", Scope.ROW, str(exc)), 0)
                        continue
                    if full is not None:
                        await self._send(full)
                for full in writer.close():
                    await self._send(full)
            finally:
                writer.discard()

    async def _send(self, file: BatchFile) -> None:
        submission = self.ledger.add(file, self._fingerprint)
        self.log.info(
            "batch file %05d: %d rows of %s, %d bytes",
            submission.seq,
            file.rows,
            file.model,
            file.bytes,
        )
        uploaded = await self.api.upload(file.path, submission.upload_name)
        submission.file_id, submission.state = uploaded.id, UPLOADED
        self.ledger.save(submission)
        file.path.unlink(missing_ok=True)
        await self._create(submission)

    async def _create(self, submission: Submission) -> None:
        assert submission.file_id is not None
        info = await self.api.create(
            submission.file_id,
            endpoint=self._endpoint,
            metadata={"zbatch_file": f"{submission.seq:05d}"},
            completion_window=self._window,
        )
        self._created(submission, info)
        self.log.info(
            "batch %s created for file %05d (%d rows)", info.id, submission.seq, submission.rows
        )

    def _created(self, submission: Submission, info: BatchInfo) -> None:
        submission.batch_id, submission.state = info.id, CREATED
        submission.created_at = float(info.created_at or time.time())
        self._note(submission, info, quiet=True)
        self.ledger.save(submission)

    async def _reattach(self, submission: Submission) -> None:
        """Finish what a killed run left between writing a file and creating its batch."""
        if submission.state == WRITTEN:
            found = await self.api.find_file(submission.upload_name)
            if found is None:
                submission.state = ABANDONED
                self.ledger.save(submission)
                self.log.info(
                    "batch file %05d was never uploaded: its %d rows are pending again",
                    submission.seq,
                    submission.rows,
                )
                return
            submission.file_id, submission.state = found.id, UPLOADED
            self.ledger.save(submission)
        assert submission.file_id is not None
        known = {s.batch_id for s in self.ledger.submissions() if s.batch_id}
        found_batch = await self.api.find_batch(submission.file_id)
        if found_batch is None or found_batch.id in known:
            await self._create(submission)
            return
        self._created(submission, found_batch)
        self.log.info("batch %s re-attached to file %05d", found_batch.id, submission.seq)

    # --- waiting and collecting -----------------------------------------------------------

    async def _collect_all(self) -> None:
        """Poll the open batches until each is final and collected (or, --no-wait, once)."""
        first = True
        while True:
            waiting = [s for s in self.ledger.submissions() if s.state == CREATED]
            if not waiting:
                return
            if not first:
                if not self._wait:
                    self.stop(
                        BatchPending(
                            f"{len(waiting)} batches are running at the provider "
                            f"({sum(s.rows for s in waiting)} rows); run the same command "
                            "later to collect them"
                        )
                    )
                    return
                spread = 1 + random.uniform(-POLL_JITTER, POLL_JITTER)
                await anyio.sleep(self.job.poll_seconds * spread)
            first = False
            for submission in waiting:
                assert submission.batch_id is not None
                info = await self.api.get(submission.batch_id)
                self._note(submission, info)
                if info.status in FINAL_STATUSES:
                    with anyio.CancelScope(shield=True):
                        await self._collect(submission, info)

    def _note(self, submission: Submission, info: BatchInfo, *, quiet: bool = False) -> None:
        """Keep the provider's view of a batch in its record; log what changed."""
        seen = (info.status, info.total, info.completed, info.failed)
        if seen == (submission.status, submission.total, submission.completed, submission.failed):
            return
        submission.status = info.status
        submission.total, submission.completed, submission.failed = seen[1:]
        submission.output_file_id = info.output_file_id
        submission.error_file_id = info.error_file_id
        submission.provider_errors = info.errors
        if quiet:
            return
        self.ledger.save(submission)
        self.log.info(
            "batch %s (file %05d): %s, %d of %d answered, %d failed%s",
            info.id,
            submission.seq,
            info.status,
            info.completed,
            info.total or submission.rows,
            info.failed,
            f" ({info.errors})" if info.errors else "",
        )

    async def _collect(self, submission: Submission, info: BatchInfo) -> None:
        """Turn a final batch's output and error lines into committed rows."""
        if submission.fingerprint != self._fingerprint:
            # Made before --force started a new generation: its answers are to another request.
            submission.state = COLLECTED
            self.ledger.save(submission)
            self.log.warning(
                "batch %s was made for the earlier request settings (before --force): "
                "its answers are not added to these results",
                info.id,
            )
            await self._forget_files(submission, info)
            return
        ids = self.ledger.ids(submission)
        by_custom_id = id_map(ids)
        rows: dict[str, Work] = {}
        if self.job.keep_columns or self.job.gold_column:
            rows = await anyio.to_thread.run_sync(self._input_rows, set(ids))
        answered: set[str] = set()
        with tempfile.TemporaryDirectory(prefix="zbatch-collect-") as scratch:
            for file_id in (info.output_file_id, info.error_file_id):
                if file_id is None:
                    continue
                path = Path(scratch) / "lines.jsonl"
                await self.api.download(file_id, path)
                with path.open("rb") as handle:
                    for raw in handle:
                        self._settle(raw, by_custom_id, rows, answered)
                        if len(self._writers[0].rows) >= self.job.part_rows:
                            await commit(self.pipeline, *self._writers)
        await commit(self.pipeline, *self._writers)
        submission.state = COLLECTED
        submission.unanswered = len(ids) - len(answered)
        self.ledger.save(submission)
        self.unanswered += submission.unanswered
        left = f", {submission.unanswered} unanswered (pending again)"
        self.log.info(
            "batch %s collected: %d rows answered%s",
            info.id,
            len(answered),
            left if submission.unanswered else "",
        )
        await self._forget_files(submission, info)

    def _settle(
        self,
        raw: bytes,
        by_custom_id: dict[str, str],
        rows: dict[str, Work],
        answered: set[str],
    ) -> None:
        """One output or error line: a result row, an error row, or nothing (never run)."""
        try:
            line = json.loads(raw)
        except ValueError:
            self.log.warning("skipped an output line that is not JSON: %.80r", raw)
            return
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        row_id = by_custom_id.get(custom_id) if isinstance(custom_id, str) else None
        if row_id is None or row_id in answered:
            return
        outcome = line_outcome(line, self.job.profile)
        if outcome is None:
            return
        answered.add(row_id)
        if self.pipeline.is_done(row_id):
            return  # committed by a run that was killed before it could record that
        self.stats.requests += 1
        pipeline = self.pipeline
        if isinstance(outcome, Failure):
            # A fatal or quota answer is not the row's fault: it stays pending.
            not_the_row = outcome.scope in (Scope.FATAL, Scope.QUOTA)
            pipeline.fail(row_id, outcome, 1, retryable=True if not_the_row else None)
            return
        pipeline.count_usage(outcome)
        work = rows.get(row_id) or Work(row_id, b"", 0, (None,) * len(self.job.keep_columns))
        failure = pipeline.accept(work, outcome, 1)
        if failure is not None:
            pipeline.fail(row_id, failure, 1, answer=outcome.content)

    def _input_rows(self, ids: set[str]) -> dict[str, Work]:
        """The given rows' keep_columns and reference labels, read again from the input (an
        answer is matched to its row long after the row was read)."""
        found: dict[str, Work] = {}
        pipeline = self.pipeline
        for raw in open_input(self.job.input_path).rows():
            if raw.data is None:
                continue
            row_id = prompt.row_id(raw.data, self.job.id_column)
            if row_id is not None and row_id in ids and row_id not in found:
                keep = pipeline.keep_values(raw.data, raw.where)
                found[row_id] = Work(row_id, b"", 0, keep, pipeline.gold(raw.data))
        return found

    async def _forget_files(self, submission: Submission, info: BatchInfo) -> None:
        """Delete the batch's files at the provider (it stores at most 1,000); best effort."""
        for file_id in (submission.file_id, info.output_file_id, info.error_file_id):
            if file_id is None:
                continue
            try:
                await self.api.delete_file(file_id)
            except ZbatchError as exc:
                self.log.info("could not delete file %s at the provider: %s", file_id, exc)

    # --- signals and progress -------------------------------------------------------------

    async def _watch_signals(self) -> None:
        """SIGINT / SIGTERM: stop now; the batches keep running and the next run collects."""
        await watch_signals(self._interrupt, self._interrupted, self.log)

    def _interrupted(self) -> bool:
        return isinstance(self.stop_reason, Interrupted)

    def _interrupt(self, code: int, name: str) -> None:
        message = (
            f"interrupted by {name}; submitted batches keep running at the provider: "
            "run the same command to collect them"
        )
        self.stop(Interrupted(message, exit_code=code))
        self._scope.cancel()

    async def _tick(self) -> None:
        while True:
            self.progress.refresh(self.stats)
            await anyio.sleep(self.progress.interval)


async def cancel_open(storage: LedgerStorage, api: BatchApi) -> list[Submission]:
    """Ask the provider to cancel every open batch; their finished lines are still collected."""
    ledger = Ledger(storage)
    cancelled = []
    try:
        for submission in ledger.submissions():
            if submission.state != CREATED or submission.status in FINAL_STATUSES:
                continue
            assert submission.batch_id is not None
            info = await api.cancel(submission.batch_id)
            submission.status = info.status
            ledger.save(submission)
            cancelled.append(submission)
    finally:
        await api.aclose()
    return cancelled
