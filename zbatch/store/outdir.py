"""The output directory as one object: reading and writing what it holds, the locks, tidying
and compaction. Its names are in :mod:`zbatch.store.layout`.

A run opens it with :func:`zbatch.store.session.open_run`, which holds the lock and does the
setup in its one right order. Everything here goes through a
:class:`~zbatch.store.storage.Storage`, so the same code serves a local disk and object
storage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import urls
from ..budget import Reservations, Spend
from ..errors import JobError
from ..schema import INPUT_FAULTS
from .compaction import compact_table, recover
from .layout import (
    BATCHES,
    ERRORS,
    GENERATIONS,
    JOB,
    JOURNAL,
    JOURNAL_ID,
    RESULTS,
    RUN_LOG,
    SPEND,
    SUMMARY,
    TABLES,
    dumps,
    shard_owns,
    spend_name,
)
from .objectstore import ObjectStorage
from .ownership import LOCK, own
from .parts import Parts
from .state import ResumeState, count_state, load_state
from .storage import LocalStorage, Storage


def open_storage(location: str) -> Storage:
    """The storage a location names: a local path or file:// URL, or s3:// / gs://."""
    urls.check_scheme(location, "output directory")
    if urls.is_remote(location):
        return ObjectStorage(location)
    return LocalStorage(urls.local_path(location))


def rehearsal_of(location: str) -> str | None:
    """``location``.simulated when a --simulate rehearsal left its answers there: what a user
    who asks for ``location`` (and finds nothing) most likely means."""
    from ..job.settings import SIMULATED_SUFFIX

    twin = location.rstrip("/") + SIMULATED_SUFFIX
    if location.rstrip("/").endswith(SIMULATED_SUFFIX):
        return None
    try:
        return twin if open_storage(twin).read_bytes(JOB) is not None else None
    except (JobError, OSError):
        return None


class OutputDir:
    """One output directory, wherever it is kept."""

    def __init__(self, location: str, storage: Storage | None = None) -> None:
        self.location = location
        self.storage = storage or open_storage(location)

    # --- reading ----------------------------------------------------------------------------

    def read_job(self) -> dict[str, Any]:
        """job.json; JobError when this is not an output directory."""
        data = self.read_json(JOB)
        if data is None:
            twin = rehearsal_of(self.location)
            guess = (
                "" if twin is None else f"; did you mean {twin} (where --simulate put its answers)?"
            )
            raise JobError(f"{self.location} is not a zbatch output directory (no job.json){guess}")
        return data

    def read_job_if_any(self) -> dict[str, Any] | None:
        """job.json, or None before the first run."""
        return self.read_json(JOB)

    def read_summary(self) -> dict[str, Any] | None:
        return self.read_json(SUMMARY)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON object the OUTDIR holds (as :meth:`write_json` wrote it), None when absent;
        JobError when it is damaged."""
        blob = self.storage.read_bytes(name)
        if blob is None:
            return None
        try:
            data = json.loads(blob)
        except ValueError as exc:
            raise JobError(
                f"{self.location}/{name} is unreadable ({exc}); move it away or use a new OUTDIR"
            ) from None
        if not isinstance(data, dict):
            raise JobError(f"{self.location}/{name} is not a JSON object; move it away")
        return data

    def read_spend(self, tag: str = "") -> Spend:
        """One ledger: the whole-job runs' (tag "") or a shard's (an empty one at first)."""
        data = self.read_json(spend_name(tag))
        return Spend() if data is None else Spend.from_json(data)

    def write_spend(self, spend: Spend, tag: str = "") -> None:
        self.write_json(spend_name(tag), spend.to_json())

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        self.storage.write_bytes(name, dumps(data))

    def total_spend(self) -> Spend | None:
        """What all runs and shards together have spent; None before the first ledger."""
        names = [n for n in self.storage.list("") if n.startswith(SPEND) and n.endswith(".json")]
        if not names:
            return None
        total = Spend()
        for name in names:
            data = self.read_json(name) or {}
            ledger = Spend.from_json(data)
            total.add(ledger)
            total.journals = [*total.journals, *ledger.journals]
        return total

    def add_spend(self, spend: Spend, name: str, tag: str) -> None:
        """Add ``spend`` to ledger ``tag`` once: ``name`` is recorded with it, and a spend
        whose name a ledger holds already is not added again."""
        if name in (self.total_spend() or Spend()).journals:
            return
        ledger = self.read_spend(tag)
        ledger.add(spend)
        ledger.journals = [*ledger.journals, name]
        self.write_spend(ledger, tag)

    def held(self) -> float:
        """USD the budget must count besides live writers: every spend ledger, and the worst
        cases of open batches (submitted, not yet collected)."""
        from ..batch.ledger import reserved_usd

        return (self.total_spend() or Spend()).usd + reserved_usd(self.storage)

    def reservations(self, writer: str) -> Reservations:
        """The OUTDIR's shared budget reservations, as ``writer`` (a run's prefix) sees them."""
        return Reservations(self.storage, writer, self.held)

    def uncommitted_rows(self) -> int:
        """Finished rows a run under way holds in its journal, not yet in parts (local
        OUTDIRs; on object storage the journal is on the running machine)."""
        if not isinstance(self.storage, LocalStorage):
            return 0
        folder = self.storage.root / JOURNAL
        if not folder.is_dir():
            return 0
        from .journal import journaled_rows

        return journaled_rows(self, folder)

    def journal_folder(self) -> Path:
        """A local folder for the journal: inside OUTDIR on a local disk. Object storage has
        no append, so there it is a local cache folder named after the OUTDIR and the token in
        its JOURNAL_ID, so that an OUTDIR deleted and made again never gets an old journal."""
        from .journal import local_folder

        if isinstance(self.storage, LocalStorage):
            return self.storage.root / JOURNAL
        token = self.storage.read_bytes(JOURNAL_ID)
        if token is None:
            fresh = secrets.token_hex(8).encode()
            try:
                self.storage.create(JOURNAL_ID, lambda handle: handle.write(fresh))
                token = fresh
            except FileExistsError:  # another shard made it first
                token = self.storage.read_bytes(JOURNAL_ID) or b""
        return local_folder(f"{self.location} {token.decode()}")

    def run_log_handler(self) -> logging.Handler:
        return self.storage.log_handler(RUN_LOG)

    def active_runs(self) -> list[str]:
        """Who holds this OUTDIR's locks now: the runs under way (one per shard)."""
        names = [name for name in self.storage.list("") if name.startswith(LOCK)]
        return [held for name in names if (held := self.storage.holder(name)) is not None]

    def parts(self, table: str) -> Parts:
        return Parts(self.storage, table)

    def load_state(self) -> ResumeState:
        return load_state(self.parts(RESULTS), self.parts(ERRORS))

    def count_state(self) -> tuple[int, ResumeState]:
        return count_state(self.parts(RESULTS), self.parts(ERRORS))

    def committed_result_schema(self) -> pa.Schema | None:
        """The schema of the first result part, which fixes the types of later ones."""
        results = self.parts(RESULTS)
        return results.schema if results.names else None

    # --- locking and setup ------------------------------------------------------------------

    def locked(
        self, shard: tuple[int, int] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Own a shard's ids (None: every id, for a whole-job run or compact): its lock held,
        no overlapping writer live (:mod:`zbatch.store.ownership`)."""
        return own(self.storage, shard)

    def holds_request(self, fingerprint: str | Sequence[str], settings: Mapping[str, Any]) -> bool:
        """True when job.json is absent or records this request (``fingerprint`` as
        :meth:`open_run` takes it; ``settings`` the request settings)."""
        previous = self.read_json(JOB)
        return previous is None or _same_request(previous, fingerprint, settings)

    def _check_job(
        self,
        fingerprint: str | Sequence[str],
        settings: Mapping[str, Any],
        *,
        force: bool,
        whole: bool = False,
    ) -> str | None:
        previous = self.read_json(JOB)
        if previous is None or _same_request(previous, fingerprint, settings):
            return None
        before = previous.get("request") or previous.get("settings") or {}
        # A setting stored only when set (id_column, defaults) changes by its absence too.
        names = {**before, **settings} if "request" in previous else settings
        changed = [name for name in names if before.get(name) != settings.get(name)]
        was_simulated = bool(before.get("simulated") or previous["settings"].get("simulate"))
        if was_simulated != bool(settings.get("simulated")) and not force:
            held, run = ("simulated", "real") if was_simulated else ("real", "simulated")
            raise JobError(
                f"{self.location} holds {held} answers, and a {run} run never mixes with them. "
                "Use another output directory, or --force to move them aside and start afresh"
            )
        what = ", ".join(changed) or "request settings"
        if not force and whole and self._nothing_settled():
            # A job stopped because it was wrong (a model that does not exist): the fixed job
            # goes on here, as the stop message promised.
            return (
                f"request settings changed ({what}); no answer was committed under the old "
                "ones, so the run goes on with the new ones"
            )
        if not force:
            raise JobError(
                f"{self.location} holds results of a different request ({what} changed). "
                "Use a new output directory, or --force to start a new generation of results here"
            )
        archive = f"{GENERATIONS}/{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}"
        for table in TABLES:
            for name in self.storage.list(table):
                self.storage.move(f"{table}/{name}", f"{archive}/{table}/{name}")
        for name in (JOB, SUMMARY):
            if self.storage.read_bytes(name) is not None:
                self.storage.move(name, f"{archive}/{name}")
        where = f"{self.location}/{archive}"
        return f"request settings changed: previous outputs moved to {where}; starting afresh"

    def _nothing_settled(self) -> bool:
        """No row is settled under the request job.json records: no result, no batch, and
        only errors that the next run sends again or that are the input's own."""
        if self.parts(RESULTS).names or self.storage.list(BATCHES):
            return False
        for batch in self.parts(ERRORS).batches(["error_type", "retryable"]):
            rows = zip(*(batch.column(i).to_pylist() for i in range(2)), strict=True)
            if any(not flag and kind not in INPUT_FAULTS for kind, flag in rows):
                return False
        return True

    def tidy(self, tag: str = "") -> None:
        """Finish an interrupted compaction and drop the temp files a crash left.

        A shard removes only its own temp files (``tag``): the others may be writing theirs."""
        for table in TABLES:
            if not tag:
                recover(self, table)
            for name in self.storage.list(table):
                if name.startswith(".") and name.endswith(".tmp") and shard_owns(name, tag):
                    self.storage.delete(f"{table}/{name}")

    # --- compaction -------------------------------------------------------------------------

    def compact(self) -> list[tuple[str, int, int]]:
        """Merge each table's parts into one (:mod:`zbatch.store.compaction`); (table, parts
        before, parts after) for each."""
        report = []
        with self.locked():
            for table in TABLES:
                recover(self, table)
                parts = self.parts(table)
                after = compact_table(self, table, parts)
                report.append((table, len(parts.names), after))
        return report


# Settings an earlier version recorded as part of the request that no longer are.
NO_LONGER_REQUEST = frozenset({"keep_columns"})


def _same_request(
    previous: Mapping[str, Any], fingerprint: str | Sequence[str], settings: Mapping[str, Any]
) -> bool:
    """job.json's fingerprint is one of ``fingerprint``, or its request settings are these
    plus only settings that are no longer part of a request."""
    same = (fingerprint,) if isinstance(fingerprint, str) else fingerprint
    if previous.get("fingerprint") in same:
        return True
    before = previous.get("request")
    if not isinstance(before, dict):
        return False
    extra = set(before) - set(settings)
    return extra <= NO_LONGER_REQUEST and all(before.get(k) == v for k, v in settings.items())
