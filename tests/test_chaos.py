"""Seeded chaos on one OUTDIR (tests/chaos.py): whole runs, shards of random splits and batch
mode started, killed -9 and restarted at random under one --max-cost that binds (writers stop
with exit 5); after a final run with a raised budget every id ends exactly once, an answer is
bought twice only when a kill lost it, and spend stays within the budget plus the worst case of
what the kills lost. The longer soak of the same code: bench/chaos_soak.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos import run_chaos


@pytest.mark.parametrize("seed", [20])
def test_writers_started_and_killed_at_random_keep_every_id_exactly_once(
    tmp_path: Path, seed: int
) -> None:
    report = run_chaos(tmp_path, seed=seed, rounds=6)
    print(report.line())
    assert report.kills and report.looks and report.stopped  # the budget bound during the chaos
    report.check()
