"""The OUTDIR's layout: every name in it, and the small pure rules about those names.

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
      .lock             held while a run is active (".lock-KofN" for shard K of N;
                        the lock names are zbatch.store.ownership's)

A leaf: the OutputDir (outdir.py), the journal and the run's session (session.py) all read
it, so none of them has to import another for a name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
