"""kill -9 at every step of batch mode, then a resume: nothing submitted twice, nothing lost.

The run is the real zbatch CLI in a child process under tests/faults.py, whose ``kill`` fault
makes the process SIGKILL itself right after that step: after each ledger write (the step is
recorded), and right after each provider call (the provider did it, the ledger has not heard
yet). The resume is a plain run; the loopback server's record of every custom_id it ever
received in a batch proves each row was submitted exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_server import BatchServer
from conftest import outcome_ids, prompt_rows, read_table, write_jsonl, zbatch_env
from helpers import kill_then_resume
from zai_server import answer_for

ROWS = prompt_rows(25)
STEPS = [
    "saved:written",
    "after:upload",
    "saved:uploaded",
    "after:create",
    "saved:created",
    "saved:in_progress",
    "after:download",
    "after:commit",
    "saved:collected",
    "after:delete_file",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_each_step_then_a_resume_submits_each_row_once(tmp_path: Path, step: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "job.toml").write_text('[run]\nmode = "batch"\nbatch_max_rows = 10\n')
    with BatchServer() as srv:
        args = [
            "run",
            str(tmp_path / "job.toml"),
            "-i",
            str(tmp_path / "in.jsonl"),
            "-o",
            str(tmp_path / "out"),
            "--base-url",
            srv.base_url,
            "--poll-seconds",
            "0.01",
        ]
        kill_then_resume(args, zbatch_env(), step)
        assert srv.submitted == {row["id"]: 1 for row in ROWS}
        assert len(srv.uploads) == 3  # no file uploaded twice
        known = {
            json.loads(p.read_text()).get("batch_id")
            for p in (tmp_path / "out" / "batches").glob("*.json")
        }
        assert {b["id"] for b in srv.batches()} <= known  # no paid batch forgotten
    done, errors = outcome_ids(tmp_path / "out")
    assert sorted(done) == sorted(row["id"] for row in ROWS) and errors == []
    table = read_table(tmp_path / "out" / "results")
    prompts = {row["id"]: row["prompt"] for row in ROWS}
    for row_id, content in zip(
        *(table.column(c).to_pylist() for c in ("id", "content")), strict=True
    ):
        assert content == answer_for([{"role": "user", "content": prompts[row_id]}])
