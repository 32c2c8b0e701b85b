"""Helpers more than one test file uses, written once (fixtures stay in conftest.py).

    from helpers import assert_answers, summary, user

Faults injected into a zbatch process are in faults.py; the fake servers are zai_server.py,
batch_server.py and s3_server.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import outcome_ids, read_table, zbatch_env
from zai_server import answer_for

from zbatch import Job

FAULTS = Path(__file__).with_name("faults.py")  # zbatch's CLI with one fault injected


def run_wrapped(
    fault: dict[str, Any], *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run zbatch's CLI under tests/faults.py with ``fault`` injected (see its module doc)."""
    environment = dict(env or zbatch_env())
    environment["ZB_FAULT"] = json.dumps(fault)
    return subprocess.run(
        [sys.executable, str(FAULTS), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kill_then_resume(args: list[str], env: dict[str, str], step: str) -> None:
    """``zbatch ARGS`` in batch mode is killed at ``step`` (a tests/faults.py ``kill`` fault),
    then the same command finishes."""
    killed = run_wrapped({"kill": step}, *args, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "zbatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr


def summary(outdir: Path) -> dict[str, Any]:
    """OUTDIR/summary.json, the last run's figures."""
    data: dict[str, Any] = json.loads((outdir / "summary.json").read_text(encoding="utf-8"))
    return data


def user(text: str) -> list[dict[str, str]]:
    """The messages of a row whose prompt is ``text`` (no system prompt)."""
    return [{"role": "user", "content": text}]


def results_by_id(outdir: Path) -> dict[str, dict[str, Any]]:
    """The committed result rows of an OUTDIR by id, checked to hold each id once."""
    rows = read_table(outdir / "results").to_pylist()
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "an id appears twice in results/"
    return by_id


def assert_answers(outdir: Path, prompts: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every id of ``prompts`` exactly once in results, holding the answer to its own prompt."""
    results, _ = outcome_ids(outdir)
    assert sorted(results) == sorted(prompts), "results/ does not hold each id exactly once"
    by_id = results_by_id(outdir)
    for row_id, text in prompts.items():
        assert by_id[row_id]["content"] == answer_for(user(text)), row_id
    return by_id


def job(**settings: Any) -> Job:
    """A Job with placeholder paths, for tests that never read or write them."""
    return Job(input_path="/in/rows.jsonl", output_dir="/out", **settings)
