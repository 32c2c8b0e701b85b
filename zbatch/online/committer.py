"""When a run's buffered rows become part files: once a buffer holds a part's worth, or every
``part_seconds``; the answer journal is sealed before a commit and settled after it."""

from __future__ import annotations

import anyio

from ..budget import Budget
from ..dispatch import Stop
from ..errors import StoreError
from ..job.settings import Job
from ..pipeline import RowPipeline, commit
from ..schema import ERROR_SCHEMA
from ..store import PartWriter
from ..store.journal import Journal
from ..store.storage import room_error

ANSWER = ERROR_SCHEMA.names.index("answer")  # an error row's paid answer, if it kept one


class Committer:
    """Commits a run's two buffers as parts, in the background and at the end."""

    def __init__(
        self,
        job: Job,
        pipeline: RowPipeline,
        results: PartWriter,
        errors: PartWriter,
        journal: Journal,
        budget: Budget,
    ) -> None:
        self.job = job
        self.pipeline = pipeline
        self.writers = (results, errors)
        self.journal = journal
        self.budget = budget
        # anyio primitives belong to the running loop: a committer is made inside it.
        self._now = anyio.Event()
        self._lock = anyio.Lock()

    def changed(self) -> None:
        """The pipeline added a row: commit early once a buffer holds a part's worth."""
        results, errors = self.writers  # called per row: no generator
        if max(results.buffered, errors.buffered) >= self.job.part_rows:
            self._now.set()

    async def timer(self, stop: Stop) -> None:
        """Commit every ``part_seconds`` (or at once when a buffer is full) until cancelled."""
        while True:
            with anyio.move_on_after(self.job.part_seconds):
                await self._now.wait()
            self._now = anyio.Event()
            try:
                await self.flush()
            except StoreError as exc:
                stop(exc, 0.0)  # what is in flight brings what can't be saved
                return
            results = self.writers[0]
            # Stop buying answers the disk could not hold: the next part needs about as
            # much room as the last one took.
            full = room_error(results.storage, results.last_part_bytes)
            if full is not None:
                stop(full, None)

    async def flush(self) -> None:
        """Commit the buffers as parts; the journal's sealed segments then go."""
        async with self._lock:
            unwritten = self.journal.seal()
            try:
                await commit(self.pipeline, *self.writers)
            except StoreError:
                await self.journal.keep(unwritten)  # the rows wait in memory: journal them
                raise
            await self.journal.settle()
            self.budget.settled(self.journal.unsettled())
            # Shards running at once spend from one budget: take in what the others spent.
            self.budget.spent = await self.journal.spent()

    async def last_flush(self) -> StoreError | None:
        """The run's last commit; rows it could not save leave the counts, and the reason
        says how many paid answers they held."""
        try:
            await self.flush()
            await anyio.to_thread.run_sync(self.budget.leave)  # its spend is in the ledger
        except StoreError as exc:
            return StoreError(f"{exc}{self._forget_unsaved()}")
        return None

    def _forget_unsaved(self) -> str:
        results, errors = self.writers
        unsaved = results.buffered + errors.buffered
        if not unsaved:
            return ""
        stats = self.pipeline.stats
        stats.ok -= results.buffered
        stats.failed -= errors.buffered
        paid = results.buffered + errors.present(ANSWER)
        return (
            f" ({paid} paid answers wait to be saved, of {unsaved} finished rows not saved; "
            "the next run sends them again)"
        )

    async def group_commit(self, stop: Stop) -> None:
        """Make received answers durable in the journal, ~50 ms at a time, until cancelled."""
        try:
            await self.journal.run()
        except StoreError as exc:
            stop(exc, 0.0)  # what is in flight brings what can't be saved
