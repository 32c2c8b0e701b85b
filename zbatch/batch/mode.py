"""Batch mode: a job's pending rows through the provider's Batch API, exactly once.

    pending Work ─> batch files ─> ledger "written" ─> upload ─> "uploaded" ─> create ─>
    "created" ─> poll (poll_seconds ± 20 %) ─> final status ─> download output and error
    files ─> pipeline.accept / fail (labels, JSON fields, error classes as live) ─> commit
    parts ─> "collected"

Every step is recorded in OUTDIR/batches/ (:mod:`zbatch.batch.ledger`) before the next one
starts, so a run killed anywhere re-attaches on the next run: a file that may have been
uploaded is looked up by its name, and rows of open batches are never packed again.

A batch is created at most once per submission: the intent (file id and a client token, sent
in the batch's metadata) is durable (state ``creating``) before ``POST /batches``; after a
create that may have reached the provider without its answer reaching us (reset, timeout,
5xx, a kill), the batch is looked up by token or file id, allowing for a listing that lags
(:data:`LOOKUPS` listings over a bounded wait), before another is created. A provider without
a listing stops the run (exit 3) with one line naming the file id to check; its rows stay
reserved until ``--resubmit-unconfirmed`` says to create the batch again.

A batch that ends ``expired``, ``cancelled`` or ``failed`` leaves its unanswered rows
pending: the next run submits them again (``--finish-online`` sends them live instead).

Budget (``max_cost``): only rows whose worst case (prompt estimate + max_tokens, at the batch
price) fits what is left are packed; each file's worst case is reserved with the OUTDIR's
other writers before it is recorded, then held by its open record until it is collected, when
its real spend (an answer without usable usage at its worst case) goes to ``spend-batch.json``
once. Rows left out stop the run with exit 5 once the submitted batches are collected.

Stopping: SIGINT / SIGTERM (with ``handle_signals``) stop at once, exit 130 / 143; batches
keep running at the provider and the next run collects them. A collection in progress is
shielded, so answers downloaded are committed before the run ends.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from ..budget import Hold, Spend
from ..dispatch import Dispatcher, RunContext
from ..errors import (
    BatchPending,
    BatchUnconfirmed,
    BudgetSpent,
    EndpointDown,
    JobError,
    RunStopped,
    ZbatchError,
)
from ..execution.options import RunOptions
from ..outcome import Failure, Scope, Success
from ..pipeline import Work, commit
from .api import TOKEN_KEY, BatchApi, BatchInfo, CreateUnconfirmed, NoListing
from .collect import Lines, input_rows
from .files import BatchFile, BatchFileWriter, LineTooBig, id_map
from .ledger import (
    ABANDONED,
    COLLECTED,
    CREATED,
    CREATING,
    FINAL_STATUSES,
    UPLOADED,
    WRITTEN,
    Ledger,
    LedgerStorage,
    Submission,
)
from .simulate import SimulatedBatchApi

POLL_JITTER = 0.2
# Looking up a batch whose create answer was lost: so many listings, the n-th after
# min(poll_seconds, 2^(n-1)) s more (at most 31 s in all), for a listing that lags.
LOOKUPS = 6
# Creates in a row whose answers are lost (each one looked up) before the run stops (exit 69).
CREATE_ATTEMPTS = 4


class RowsLeft(RunStopped):
    """Batches ended (expired / cancelled / failed) leaving rows unanswered (exit 1)."""

    exit_code = 1


class BatchMode(Dispatcher):
    """Submits, polls and collects a job's batches; one instance per run."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        api: BatchApi,
        record_spend: Callable[[Spend, str], None],
        wait: bool = True,
    ) -> None:
        """``record_spend(spend, name)`` adds a collected batch's spend to the OUTDIR's
        ledger once (by ``name``); ``wait=False`` returns once the rows are submitted (the
        next run collects them)."""
        super().__init__(ctx)
        self.pipeline = ctx.pipeline
        self.api = api
        self.ledger = Ledger(ctx.outdir.storage)
        self._works = ctx.works
        self._writers = (ctx.results, ctx.errors)
        self._wait = wait
        self._fingerprint = ctx.job.fingerprint()
        self.unanswered = 0
        self.budget = ctx.budget
        self._record_spend = record_spend
        self._worst: dict[str, float] = {}  # packed rows' worst cases, until their file is sent
        self.over_budget = 0  # rows not submitted: their worst case did not fit the budget
        self._left = 0.0  # what the budget had left when the rows were packed

    # --- the run --------------------------------------------------------------------------

    async def _close(self) -> None:
        await self.api.aclose()
        try:
            await commit(self.pipeline, *self._writers)
        except ZbatchError as exc:
            self.stop_reason = exc

    def _ended(self) -> None:
        if self.stop_reason is None and self.over_budget:
            self.stop(
                BudgetSpent(
                    f"{self.over_budget} rows were not submitted: their worst case does not fit "
                    f"what is left of the budget (${self._left:.4f} of "
                    f"${self.budget.max_cost or 0:.4f}); raise --max-cost (limits.max_cost) and "
                    "run the same command to submit them"
                )
            )
        if self.stop_reason is None and self.unanswered:
            self.stop(
                RowsLeft(
                    f"{self.unanswered} rows were left unanswered by expired, cancelled or "
                    "failed batches; run the same command to submit them again, or add "
                    "--finish-online to send them live"
                )
            )

    async def _dispatch(self) -> None:
        for submission in self.ledger.submissions():
            if submission.state in (WRITTEN, UPLOADED, CREATING):
                await self._reattach(submission)
        await self._submit()
        if not self.stopping:
            await self._collect_all()

    # --- submitting -----------------------------------------------------------------------

    async def _submit(self) -> None:
        """Pack every pending row not held by an open batch into files and submit them."""
        held = self.ledger.open_ids(self._fingerprint)
        job = self.job
        room = await self._room()
        with tempfile.TemporaryDirectory(prefix="zbatch-batch-") as scratch:
            writer = BatchFileWriter(
                Path(scratch),
                endpoint=self.job.profile.batch_endpoint,
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
                    if room is not None:
                        worst = self.budget.worst_case(
                            work.tokens - work.answer_tokens, work.answer_tokens
                        )
                        if worst > room:
                            self.over_budget += 1
                            continue
                        room -= worst
                        self._worst[work.id] = worst
                    try:
                        full = writer.add(work.id, work.model, work.body)
                    except LineTooBig as exc:
                        self.pipeline.fail(work.id, Failure("bad_request", Scope.ROW, str(exc)), 0)
                        if room is not None:
                            room += self._worst.pop(work.id)
                        continue
                    if full is not None:
                        await self._send(full)
                for full in writer.close():
                    await self._send(full)
            finally:
                writer.discard()

    async def _room(self) -> float | None:
        """USD the budget has left for new batches (None: no budget)."""
        if self.budget.max_cost is None:
            return None
        await self.budget.publish()
        shared = self.budget.shared
        used = self.budget.spent if shared is None else shared.used
        self._left = max(0.0, self.budget.max_cost - used)
        return self._left

    async def _send(self, file: BatchFile) -> None:
        worst = sum(self._worst.pop(row_id, 0.0) for row_id in file.ids)
        if self.budget.max_cost is not None and not await self.budget.publish(worst):
            # Other writers spent the room meanwhile: these rows wait for a larger budget.
            self.over_budget += file.rows
            return
        submission = self.ledger.add(file, self._fingerprint, worst_usd=worst)
        self.budget.hand_over(worst)  # the open record holds it now
        self.log.info(
            "batch file %05d: %d rows of %s, %d bytes",
            submission.seq,
            file.rows,
            file.model,
            file.bytes,
        )
        try:
            uploaded = await self.api.upload(file.path, submission.upload_name)
        except JobError:  # refused outright (no Batch API here): nothing is at the provider
            submission.state = ABANDONED
            self.ledger.save(submission)
            raise
        submission.file_id, submission.state = uploaded.id, UPLOADED
        self.ledger.save(submission)
        file.path.unlink(missing_ok=True)
        await self._create(submission)

    async def _create(self, submission: Submission) -> None:
        """Create the batch of an uploaded file, at most once: the intent is durable first,
        and a create whose answer is lost is looked up before it is sent again."""
        assert submission.file_id is not None
        if submission.token is None:
            submission.token = secrets.token_hex(16)
        submission.state = CREATING
        self.ledger.save(submission)
        for _ in range(CREATE_ATTEMPTS):
            try:
                info: BatchInfo | None = await self.api.create(
                    submission.file_id,
                    endpoint=self.job.profile.batch_endpoint,
                    metadata={"zbatch_file": f"{submission.seq:05d}", TOKEN_KEY: submission.token},
                    completion_window=self.job.profile.batch_window,
                )
            except CreateUnconfirmed as exc:
                self.log.warning(
                    "batch file %05d: the answer to creating its batch was lost (%s); "
                    "looking it up before creating it again",
                    submission.seq,
                    exc,
                )
                info = await self._look_up(submission)
            except ZbatchError:
                # Refused for sure (the provider answered, or no connection opened): no batch.
                submission.state = UPLOADED
                self.ledger.save(submission)
                raise
            if info is not None:
                self._created(submission, info)
                self.log.info(
                    "batch %s created for file %05d (%d rows)",
                    info.id,
                    submission.seq,
                    submission.rows,
                )
                return
        raise EndpointDown(
            f"creating the batch of file {submission.file_id} lost its answer "
            f"{CREATE_ATTEMPTS} times and no batch of it is listed; run the same command "
            "when the Batch API is back (it looks the batch up again first)"
        )

    async def _look_up(self, submission: Submission) -> BatchInfo | None:
        """The batch a create of ``submission`` may have made, looked up by its token and
        file id over a bounded wait (a listing may lag); None when it was not made.
        Without a listing: stop, unless --resubmit-unconfirmed says to create it again."""
        assert submission.file_id is not None
        known = {s.batch_id for s in self.ledger.submissions() if s.batch_id}
        for attempt in range(LOOKUPS):
            if attempt:
                await anyio.sleep(min(self.job.poll_seconds, 2.0 ** (attempt - 1)))
            try:
                found = await self.api.find_batch(submission.file_id, token=submission.token)
            except NoListing as exc:
                if self.job.resubmit_unconfirmed:
                    self.log.warning(
                        "batch file %05d: no batch listing (%s); creating its batch again "
                        "(--resubmit-unconfirmed)",
                        submission.seq,
                        exc,
                    )
                    return None
                raise BatchUnconfirmed(
                    f"the batch of file {submission.file_id} (batch file {submission.seq:05d}, "
                    f"{submission.rows} rows) may have been created, and {self.job.base_url} "
                    f"has no batch listing to check ({exc}); look in the provider's console "
                    f"for a batch of input file {submission.file_id}: if there is none, run "
                    "the same command with --resubmit-unconfirmed (its rows stay reserved "
                    "until then)"
                ) from None
            if found is not None and found.id not in known:
                return found
        return None

    def _created(self, submission: Submission, info: BatchInfo) -> None:
        submission.batch_id, submission.state = info.id, CREATED
        submission.created_at = float(info.created_at or time.time())
        self._note(submission, info, quiet=True)
        self.ledger.save(submission)

    async def _reattach(self, submission: Submission) -> None:
        """Finish what a killed run left between writing a file and creating its batch."""
        if submission.state == WRITTEN:
            try:
                found = await self.api.find_file(submission.upload_name)
            except NoListing:  # cannot tell: an upload costs nothing, so pack its rows again
                found = None
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
        if submission.state == CREATING:
            found_batch = await self._look_up(submission)
            if found_batch is not None:
                self._created(submission, found_batch)
                self.log.info("batch %s re-attached to file %05d", found_batch.id, submission.seq)
                return
        await self._create(submission)

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
        rows: dict[str, Work] = {}
        if self.job.keep_columns or self.job.gold_column or self.pipeline.cache is not None:
            rows = await anyio.to_thread.run_sync(input_rows, self.pipeline, set(ids))
        spend = Spend()
        # An answer without usable usage is charged the average worst case of its batch.
        hold = Hold(submission.worst_usd / max(1, submission.rows), 0, 0)

        def charge(answer: Success) -> None:
            spend.count(answer, self.budget.bill(answer, hold, self.stats))

        lines = Lines(self.pipeline, self.log, id_map(ids), rows, charge)
        with tempfile.TemporaryDirectory(prefix="zbatch-collect-") as scratch:
            for file_id in (info.output_file_id, info.error_file_id):
                if file_id is None:
                    continue
                path = Path(scratch) / "lines.jsonl"
                await self.api.download(file_id, path)
                with path.open("rb") as handle:
                    for raw in handle:
                        lines.settle(raw)
                        if self._writers[0].buffered >= self.job.part_rows:
                            await commit(self.pipeline, *self._writers)
        await commit(self.pipeline, *self._writers)
        await anyio.to_thread.run_sync(self._record_spend, spend, submission.upload_name)
        submission.state = COLLECTED
        answered = lines.answered
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

    async def _forget_files(self, submission: Submission, info: BatchInfo) -> None:
        """Delete the batch's files at the provider (it stores at most 1,000); best effort."""
        for file_id in (submission.file_id, info.output_file_id, info.error_file_id):
            if file_id is None:
                continue
            try:
                await self.api.delete_file(file_id)
            except ZbatchError as exc:
                self.log.info("could not delete file %s at the provider: %s", file_id, exc)

    # --- signals ------------------------------------------------------------------------

    def _resume_hint(self) -> str:
        return (
            "submitted batches keep running at the provider: run the same command to collect them"
        )

    # A signal stops at once: the batches run on at the provider, and a collection in
    # progress is shielded.
    _interrupt_grace = 0.0


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


def build(ctx: RunContext, options: RunOptions) -> BatchMode:
    """The batch family's parts (see :class:`~zbatch.dispatch.Build`): the provider's Batch API
    client (the simulated one for --simulate) and the dispatcher that submits and collects."""
    job = ctx.job
    transport = SimulatedBatchApi(job) if job.simulate else options.transport
    api = BatchApi(
        job.profile,
        base_url=job.base_url,
        api_key=ctx.api_key,
        timeout=job.timeout,
        max_retries=job.max_retries,
        backoff=ctx.backoff,
        transport=transport,
    )
    outdir = ctx.outdir
    record_spend = lambda spend, name: outdir.add_spend(spend, name, "batch")  # noqa: E731
    return BatchMode(ctx, api=api, record_spend=record_spend, wait=options.wait)
