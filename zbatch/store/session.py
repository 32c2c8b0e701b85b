"""An OUTDIR held by one run (:class:`RunSession`), and the setup order that gives one
(:func:`open_run`): lock → finish what a crash left (tidy) → replay a killed run's journal →
check job.json against the job (or archive the old generation with --force) → read the resume
state.

It sits above the journal (a run replays and writes one) and the OutputDir (which it holds),
so neither of those imports the other for the setup.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .journal import Journal, replay
from .layout import JOB, TABLES, dumps, shard_tag
from .outdir import OutputDir
from .parts import PartWriter
from .state import ResumeState


@dataclass
class RunSession:
    """An OUTDIR held by one run: its resume state, and where its parts go."""

    outdir: OutputDir
    state: ResumeState
    notice: str | None  # what --force did, to tell the user
    prefix: str  # makes this run's part names unique
    tag: str = ""  # the shard's tag ("3of8"), "" for a whole-job run
    replayed: int = 0  # rows the journals of a killed run held, committed at the start
    warnings: tuple[str, ...] = ()  # damaged journal segments, for run.log

    def writer(self, table: str, schema: pa.Schema) -> PartWriter:
        return PartWriter(self.outdir.storage, table, schema, prefix=self.prefix)

    def journal(self, writers: dict[str, PartWriter], *, enabled: bool) -> Journal:
        """This run's answer journal over its part writers (``enabled=False``: spend only)."""
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


@contextlib.contextmanager
def open_run(
    outdir: OutputDir,
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
    with outdir.locked(key):
        tag = shard_tag(key)
        outdir.tidy(tag)
        for table in TABLES:
            outdir.storage.make_folder(table)
        # Before the job check: a killed run's answers belong to its own generation.
        replayed = replay(outdir, outdir.journal_folder(), key)
        notice = outdir._check_job(fingerprint, settings, force=force, whole=shard is None)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
        prefix = f"{stamp}-{secrets.token_hex(2)}" + (f"-{tag}" if tag else "")
        # (no local name holds the state: the run lets it go before its end, see execute)
        yield RunSession(
            outdir, outdir.load_state(), notice, prefix, tag, replayed.rows, replayed.warnings
        )
