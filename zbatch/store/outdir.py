"""The output directory as one object: every layout name, the lock, and the setup order.

    OUTDIR/
      job.json          resolved settings + fingerprint (never the API key)
      results/*.parquet committed result parts (each id at most once)
      errors/*.parquet  committed error parts (an append-only log)
      summary.json      the last run's manifest, or the shards' view (zbatch.ops.manifest)
      summaries/        one manifest per shard: KofN.json
      run.log           one line per event
      spend.json        what the runs have spent (tokens, USD), for max_cost
                        ("spend-KofN.json" for shard K of N: shards run at once;
                        "spend-batch.json" for collected batches)
      budget/           with max_cost: every live writer's reservations (zbatch.budget)
      batches/          batch mode's submissions (zbatch.batch.ledger)
      journal/          answers not yet in parts (see zbatch.store.journal)
      journal.id        on object storage: which local folder holds the journal
      .lock             held while a run is active (".lock-KofN" for shard K of N)

A run opens it with :meth:`OutputDir.open_run`, which holds the lock and does the setup in
its one right order: finish what a crash left (tidy) → check job.json against the job
(or archive the old generation with --force) → read the resume state. Everything here goes
through a :class:`~zbatch.store.storage.Storage`, so the same code serves a local disk and
object storage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .. import urls
from ..budget import Reservations, Spend
from ..errors import JobError
from ..schema import INPUT_FAULTS
from .compaction import compact_table, recover
from .objectstore import ObjectStorage
from .ownership import LOCK, own
from .parts import Parts, PartWriter
from .state import ResumeState, count_state, load_state
from .storage import LocalStorage, Storage

if TYPE_CHECKING:  # the journal (and anyio) come with a run: `status` starts without them
    from .journal import Journal

JOB = "job.json"
SUMMARY = "summary.json"
RUN_LOG = "run.log"
RESULTS = "results"
ERRORS = "errors"
BATCHES = "batches"  # batch mode's ledger (zbatch.batch.ledger)
TABLES = (RESULTS, ERRORS)
GENERATIONS = "generations"
SPEND = "spend"  # spend.json / spend-3of8.json; outlive --force generations
JOURNAL = "journal"
JOURNAL_ID = "journal.id"  # object storage: names this OUTDIR's local journal folder


def open_storage(location: str) -> Storage:
    """The storage a location names: a local path or file:// URL, or s3:// / gs://."""
    urls.check_scheme(location, "output directory")
    if urls.is_remote(location):
        return ObjectStorage(location)
    return LocalStorage(urls.local_path(location))


def dumps(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def spend_name(tag: str) -> str:
    """A run's spend ledger: one per shard, so shards running at once never race for one."""
    return f"{SPEND}-{tag}.json" if tag else f"{SPEND}.json"


def shard_tag(shard: tuple[int, int] | None) -> str:
    """How a shard is named in lock and part names: "3of8"; "" for a whole-job run."""
    return "" if shard is None else f"{shard[0]}of{shard[1]}"


def shard_owns(name: str, tag: str) -> bool:
    """Whether a run with this shard ``tag`` made the file ``name`` (its run prefix holds the
    tag); a whole-job run (tag "") owns every file."""
    return not tag or f"-{tag}-" in name


@dataclass
class RunSession:
    """An OUTDIR held by one run: its resume state, and where its parts go."""

    outdir: OutputDir
    state: ResumeState
    notice: str | None  # what --force did, to tell the user
    prefix: str  # makes this run's part names unique
    tag: str = ""  # the shard's tag ("3of8"), "" for a whole-job run
    replayed: int = 0  # rows the journals of a killed run held, committed at the start

    def writer(self, table: str, schema: pa.Schema) -> PartWriter:
        return PartWriter(self.outdir.storage, table, schema, prefix=self.prefix)

    def journal(self, writers: dict[str, PartWriter], *, enabled: bool) -> Journal:
        """This run's answer journal over its part writers (``enabled=False``: spend only)."""
        from .journal import Journal

        outdir = self.outdir
        return Journal(
            outdir.journal_folder() if enabled else None,
            self.prefix,
            writers,
            ledger=outdir.read_spend(self.tag),
            save_ledger=functools.partial(outdir.write_spend, tag=self.tag),
            read_total=outdir.total_spend,
        )

    def save_job(
        self, fingerprint: str, settings: Mapping[str, Any], *, once: bool = False, **extra: Any
    ) -> None:
        """Write job.json; with ``once`` (shards) only if no run wrote it yet, and then check
        that the one written is this job's (two shards may start at the same moment)."""
        record = {"fingerprint": fingerprint, "settings": dict(settings), **extra}
        if not once:
            self.outdir.write_json(JOB, record)
            return
        blob = dumps(record)
        try:
            self.outdir.storage.create(JOB, lambda handle: handle.write(blob))
        except FileExistsError:
            self.outdir._check_job(fingerprint, extra.get("request") or {}, force=False)


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

        return journaled_rows(folder)

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

    @contextlib.contextmanager
    def open_run(
        self,
        fingerprint: str | Sequence[str],
        settings: Mapping[str, Any],
        *,
        force: bool,
        shard: Any = None,
    ) -> Iterator[RunSession]:
        """Lock, tidy, check job.json (or archive with ``force``), read the resume state.

        ``fingerprint`` may list the job's fingerprint and those earlier versions gave the
        same settings: job.json holding any of them is the same request."""
        key = None if shard is None else (shard.index, shard.count)
        with self.locked(key):
            tag = shard_tag(key)
            self.tidy(tag)
            for table in TABLES:
                self.storage.make_folder(table)
            # Before the job check: a killed run's answers belong to its own generation.
            from .journal import replay

            replayed = replay(self, self.journal_folder(), key)
            notice = self._check_job(fingerprint, settings, force=force, whole=shard is None)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
            prefix = f"{stamp}-{secrets.token_hex(2)}" + (f"-{tag}" if tag else "")
            yield RunSession(self, self.load_state(), notice, prefix, tag, replayed)

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
