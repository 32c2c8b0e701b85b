"""The issue's acceptance run: 120,000 rows in batch mode make 3 files, answer each row once,
and the zbatch process stays within the live run's memory budget (300 MB peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from batch_server import BatchServer
from conftest import zbatch_env
from zai_server import answer_for

ROWS = 120_000
RSS_BUDGET_MB = 300

# Starts the command from a small process and prints "<exit code> <peak RSS KiB>" of it. Spawned
# straight from pytest, the child's ru_maxrss would include pytest's own high-water mark (Linux
# carries the pre-exec address space's mark over exec, and subprocess starts children with
# vfork): late in a full suite, pytest alone is past the budget.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


@pytest.mark.slow
def test_120k_rows_make_3_files_each_row_answered_once_within_300_mb(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    with source.open("w") as handle:
        for n in range(ROWS):
            handle.write(json.dumps({"id": f"doc-{n:07d}", "prompt": f"Summarise item {n}"}) + "\n")
    with BatchServer() as srv:
        command = [sys.executable, "-m", "zbatch", "run", "-i", str(source)]
        command += ["-o", str(tmp_path / "out"), "--base-url", srv.base_url]
        command += ["--mode", "batch", "--poll-seconds", "0.01", "--quiet"]
        with (tmp_path / "stderr.txt").open("wb") as errors:
            launcher = subprocess.run(
                [sys.executable, "-c", LAUNCHER, *command],
                env=zbatch_env(),
                stdout=subprocess.PIPE,
                stderr=errors,
                check=True,
            )
        returncode, maxrss_kib = map(int, launcher.stdout.split())
        assert returncode == 0, (tmp_path / "stderr.txt").read_text()
        assert [u["lines"] for u in srv.uploads] == [50_000, 50_000, 20_000]
        assert len(srv.submitted) == ROWS and set(srv.submitted.values()) == {1}
    peak_mb = maxrss_kib / 1024
    print(f"peak RSS of the zbatch process: {peak_mb:.0f} MB")
    assert peak_mb <= RSS_BUDGET_MB, f"peak RSS {peak_mb:.0f} MB"
    table = ds.dataset(tmp_path / "out" / "results").to_table(columns=["id", "content"])
    assert table.num_rows == ROWS
    assert pc.count_distinct(table.column("id")).as_py() == ROWS
    for row_id, content in zip(*(c.to_pylist() for c in table.slice(0, 1000).columns), strict=True):
        prompt = f"Summarise item {int(row_id.removeprefix('doc-'))}"
        assert content == answer_for([{"role": "user", "content": prompt}])
