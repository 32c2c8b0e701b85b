"""summary.json as a run manifest: versioned, with a JSON Schema shipped beside this module
(``summary.schema.json``, README "Running it on a schedule").

A whole-job run (or a cluster's driver) writes ``OUTDIR/summary.json``, kind "run". A shard
writes its own ``OUTDIR/summaries/KofN.json`` (kind "run"; the next run of the same shard
replaces it, no other shard touches it), then ``summary.json`` as the OUTDIR's view, kind
"shards": every shard of its split, their figures added up, and an outcome that is
"finished" only when each of the N shards finished — a shard stopped by its budget makes
the view stopped, whatever the others did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import JobError
from ..readers.base import InputPath, RemoteFile
from ..store.outdir import SUMMARY, OutputDir

SCHEMA_VERSION = 1
SUMMARIES = "summaries"
# Exit codes that say a run finished: 0 (every row done) and 1 (some rows failed).
FINISHED = (0, 1)


def schema() -> dict[str, Any]:
    """The JSON Schema of summary.json (and of each summaries/KofN.json)."""
    from importlib import resources

    text = resources.files(__package__).joinpath("summary.schema.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def iso(seconds: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC string ("2026-12-07T13:40:02.118Z")."""
    if seconds is None:
        return None
    when = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


def unix(text: str | None) -> float | None:
    """:func:`iso` read back."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def summary_name(tag: str) -> str:
    """Where a run's manifest goes: summary.json, or summaries/KofN.json for a shard."""
    return f"{SUMMARIES}/{tag}.json" if tag else SUMMARY


def last_success(outdir: OutputDir, tag: str) -> float | None:
    """When the whole job (``tag`` "") or this shard last ended with exit 0, by its previous
    manifest; None when it never did (or the manifest is unreadable)."""
    try:
        previous = outdir.read_json(summary_name(tag))
    except JobError:  # a damaged manifest costs the figure, never the run
        return None
    if not previous or previous.get("kind", "run") != "run":
        return None
    return unix(previous.get("last_success_at"))


def input_fingerprint(paths: Sequence[InputPath]) -> str:
    """A digest of the input files as they stand: names, sizes and modification times
    (object storage: its etag or time), without reading them again."""
    described: list[Any] = []
    for path in paths:
        if isinstance(path, Path):
            stat = path.stat()
            described.append([str(path), stat.st_size, stat.st_mtime_ns])
        elif isinstance(path, RemoteFile):
            try:
                info = path.fs.info(path.url)
            except OSError:  # the run reads it anyway, and says so if it cannot
                info = {}
            stamp = info.get("ETag") or info.get("etag") or str(info.get("LastModified", ""))
            described.append([path.url, info.get("size"), str(stamp)])
        else:
            described.append([str(path)])  # stdin: nothing to say but that
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunInfo:
    """Who ran what, and when it started: the manifest's fixed part, known at the start."""

    run_id: str  # the run's part-name prefix: its parts and its manifest share it
    shard: str | None  # "3/8"; None for a whole-job run
    tag: str  # "3of8"; "" for a whole-job run
    job_fingerprint: str
    input_fingerprint: str
    started_at: float  # Unix time
    host: str

    @classmethod
    def begin(
        cls,
        run_id: str,
        *,
        shard: str | None,
        tag: str,
        job_fingerprint: str,
        paths: Sequence[InputPath],
    ) -> RunInfo:
        import socket  # with a run: `zbatch status` starts without it

        return cls(
            run_id,
            shard,
            tag,
            job_fingerprint,
            input_fingerprint(paths),
            time.time(),
            socket.gethostname(),
        )


def record(
    info: RunInfo, figures: Mapping[str, Any], previous_success: float | None
) -> dict[str, Any]:
    """A run's manifest: ``figures`` (:meth:`Stats.to_json` and what the caller adds) with
    who, what and when."""
    ended = time.time()
    success = ended if figures.get("exit_code") == 0 else previous_success
    return {
        **figures,
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "run_id": info.run_id,
        "shard": info.shard,
        "zbatch_version": __version__,
        "host": info.host,
        "started_at": iso(info.started_at),
        "ended_at": iso(ended),
        "fingerprints": {"job": info.job_fingerprint, "input": info.input_fingerprint},
        "last_success_at": iso(success),
    }


def write(outdir: OutputDir, manifest: Mapping[str, Any], tag: str) -> None:
    """Keep a run's manifest: summary.json for a whole-job run (shard manifests of an
    earlier split go), else the shard's own file and summary.json as the OUTDIR's view."""
    if not tag:
        outdir.write_json(SUMMARY, manifest)
        for name in outdir.storage.list(SUMMARIES):
            outdir.storage.delete(f"{SUMMARIES}/{name}")
        return
    outdir.storage.make_folder(SUMMARIES)
    outdir.write_json(summary_name(tag), manifest)
    count = int(tag.split("of")[1])
    # Two shards ending at once may each miss the other here; `status` reads the shards'
    # own files, and the next shard to end writes the view again.
    outdir.write_json(SUMMARY, view(shard_manifests(outdir, count), count))


def shard_manifests(outdir: OutputDir, count: int | None = None) -> list[dict[str, Any]]:
    """The shards' own manifests (of a split into ``count``, or of the latest split), in
    shard order."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for name in outdir.storage.list(SUMMARIES):
        index, _, total = name.removesuffix(".json").partition("of")
        if not (index.isdigit() and total.isdigit()):
            continue
        try:
            data = outdir.read_json(f"{SUMMARIES}/{name}")
        except JobError:  # a damaged one is shown as missing, never fails `status`
            continue
        if data is not None:
            found[int(total), int(index)] = data
    if count is None and found:
        latest = max(found.values(), key=lambda data: data.get("ended_at") or "")
        count = int(str(latest.get("shard", "0/0")).split("/")[1] or 0)
    return [found[key] for key in sorted(found) if key[0] == count]


def view(shards: Sequence[Mapping[str, Any]], count: int) -> dict[str, Any]:
    """The OUTDIR's view over its shards' manifests: figures added up, and the outcome of
    the whole ("finished" only when every one of ``count`` shards finished)."""
    ok = [s for s in shards if s.get("exit_code") in FINISHED]
    stopped = [s for s in shards if s.get("exit_code") not in FINISHED]
    if stopped:
        first = stopped[0]
        outcome = f"shard {first.get('shard')} {first.get('outcome')}"
        exit_code: int | None = first.get("exit_code")
    elif len(ok) < count:
        outcome = f"incomplete: {len(ok)} of {count} shards have finished"
        exit_code = None
    else:
        failed = any(s.get("exit_code") == 1 for s in ok)
        outcome = "finished with errors" if failed else "finished"
        exit_code = 1 if failed else 0
    successes = [unix(s.get("last_success_at")) for s in shards]
    everyone = len(shards) == count and all(t is not None for t in successes)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "shards",
        "outcome": outcome,
        "exit_code": exit_code,
        "shard_count": count,
        "shards": [
            {key: s.get(key) for key in ("shard", "run_id", "outcome", "exit_code", "ended_at")}
            for s in shards
        ],
        "rows": {
            key: sum(s.get("rows", {}).get(key, 0) for s in shards)
            for key in ("input", "ok", "failed", "skipped_already_done", "pending")
        },
        "requests": sum(s.get("requests", 0) for s in shards),
        "tokens": {
            key: sum(s.get("tokens", {}).get(key, 0) for s in shards)
            for key in ("prompt", "completion", "cached")
        },
        "cost_usd": _total(s.get("cost_usd") for s in shards),
        "spent_usd_all_runs": max(
            (s["spent_usd_all_runs"] for s in shards if s.get("spent_usd_all_runs") is not None),
            default=None,
        ),
        "max_cost_usd": next((s.get("max_cost_usd") for s in shards), None),
        "zbatch_version": __version__,
        "started_at": min((s["started_at"] for s in shards if s.get("started_at")), default=None),
        "ended_at": max((s["ended_at"] for s in shards if s.get("ended_at")), default=None),
        "fingerprints": {"job": next((s.get("fingerprints", {}).get("job") for s in shards), None)},
        # The OUTDIR succeeded when its last shard to succeed did, every shard having done so.
        "last_success_at": iso(max(t for t in successes if t is not None)) if everyone else None,
    }


def _total(values: Any) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known), 6) if known else None
