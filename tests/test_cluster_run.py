"""Whole jobs on a Dask LocalCluster of real worker processes, against the loopback server."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    local_cluster,
    outcome_ids,
    prompt_rows,
    read_table,
    run_zbatch,
    start_zbatch,
    stop_process,
    wait_for,
    write_jsonl,
)
from zai_server import ZaiServer, answer_for

from zbatch import Job
from zbatch.api import run as run_job
from zbatch.cluster.task import run_shard
from zbatch.store import OutputDir

CAP = 6


def answers_match(outdir: Path, rows: list[dict[str, Any]]) -> None:
    """Every row is in the results exactly once, holding the answer to its own prompt."""
    prompt_of = {row["id"]: row["prompt"] for row in rows}
    table = OutputDir(str(outdir)).parts("results")
    results, errors = outcome_ids(outdir)
    assert table.names, "no result parts"
    assert sorted(results) == sorted(prompt_of), Counter(results).most_common(3)
    assert errors == []
    for row in read_table(outdir / "results").select(["id", "content"]).to_pylist():
        assert row["content"] == answer_for([{"role": "user", "content": prompt_of[row["id"]]}])


def cluster_run(*args: str) -> list[str]:
    return ["run", *args, "--cluster", "local:2", "--concurrency", str(CAP)]


def test_cluster_wide_cap_holds_across_two_worker_processes(tmp_path: Path) -> None:
    """`--cluster local:2 --concurrency 6` against a server that answers 1302 above 6 in
    flight: the server never sees more than 6 at once, under 5% of requests are rejected,
    every row lands exactly once, and the job gets one summary.json."""
    rows = prompt_rows(300)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    outdir = tmp_path / "out"
    with ZaiServer(latency=0.1, max_inflight=CAP) as server:
        proc = run_zbatch(
            *cluster_run("-i", str(path), "-o", str(outdir), "--base-url", server.base_url),
            timeout=300,
        )
        stats = server.stats()
    assert proc.returncode == 0, proc.stderr
    assert stats["max_inflight_seen"] <= CAP
    rejected = stats["errors_by_code"].get("1302", 0)
    assert rejected < 0.05 * stats["requests"], stats["errors_by_code"]
    answers_match(outdir, rows)
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["rows"]["ok"] == len(rows)
    assert summary["rows"]["pending"] == 0
    assert summary["requests"] == stats["requests"]
    assert summary["cluster"] == {"tasks": 4, "threads": 2}
    log = (outdir / "run.log").read_text()
    assert "start on local:2: 4 shard tasks, 2 worker threads" in log
    assert "end: finished, ok 300" in log
    assert "rows ok                  300" in proc.stdout
    # one progress display for the job, summed from the tasks' reports
    assert "progress 300/300 rows" in proc.stderr


def worker_pids(driver: int) -> list[int]:
    """The Dask worker processes a driver started (multiprocessing children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == driver and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def test_a_killed_worker_costs_no_row_twice(tmp_path: Path) -> None:
    """SIGKILL one of the two worker processes mid-run: Dask runs its tasks again, which send
    only rows not yet committed, and every row still lands exactly once."""
    rows = prompt_rows(600)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    outdir = tmp_path / "out"
    with ZaiServer(latency=0.05, max_inflight=CAP) as server:
        driver = start_zbatch(
            *cluster_run(
                "-i",
                str(path),
                "-o",
                str(outdir),
                "--base-url",
                server.base_url,
                "--part-rows",
                "10",
            )
        )
        log = outdir / "run.log"
        # Both workers are running a shard task (of ~150 rows each).
        wait_for(
            lambda: log.exists() and log.read_text().count("INFO start shard ") >= 2, timeout=180
        )
        wait_for(lambda: server.stats()["successes"] >= 20, timeout=180)
        victims = worker_pids(driver.pid)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        _out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
    answers_match(outdir, rows)
    assert json.loads((outdir / "summary.json").read_text())["outcome"] == "finished"
    assert log.read_text().count("INFO start shard ") > 4  # the killed worker's task ran again


def test_ctrl_c_stops_every_task_and_leaves_a_resumable_outdir(tmp_path: Path) -> None:
    """SIGINT to the driver: the tasks stop and commit what completed, the run exits 130;
    the same command then finishes the job with every row exactly once."""
    rows = prompt_rows(600)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    outdir = tmp_path / "out"
    with ZaiServer(latency=0.1, max_inflight=CAP) as server:
        args = cluster_run("-i", str(path), "-o", str(outdir), "--base-url", server.base_url)
        driver = start_zbatch(*args)
        wait_for(lambda: server.stats()["successes"] >= 60, timeout=180)
        _out, err = stop_process(driver, signal.SIGINT)
        assert driver.returncode == 130, err
        sent_before = server.stats()["successes"]
        assert sent_before < len(rows)
        results, _ = outcome_ids(outdir)
        assert len(results) == len(set(results)) > 0
        summary = json.loads((outdir / "summary.json").read_text())
        assert summary["outcome"].startswith("stopped: interrupted by SIGINT")
        resumed = run_zbatch(*args, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        # Paid answers were committed: the resume asks only for rows not answered before.
        assert server.stats()["successes"] == len(rows)
    answers_match(outdir, rows)


def test_a_fatal_answer_in_one_task_stops_them_all(tmp_path: Path) -> None:
    """The server refuses the account (1113) after 40 answers: the task that meets it stops,
    the driver stops the others, every answer given is committed once, and the run exits 3
    with what to do; the same command then finishes the job."""
    rows = prompt_rows(300)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    outdir = tmp_path / "out"
    with ZaiServer(latency=0.05, fatal_after=40) as server:
        args = cluster_run("-i", str(path), "-o", str(outdir), "--base-url", server.base_url)
        first = run_zbatch(*args, timeout=300)
        assert first.returncode == 3, first.stderr
        assert "top up" in first.stderr
        results, _ = outcome_ids(outdir)
        assert len(results) == len(set(results)) == server.stats()["successes"] == 40
        assert json.loads((outdir / "summary.json").read_text())["exit_code"] == 3
        server.configure(fatal_after=None)
        server.reset_stats()
        second = run_zbatch(*args, timeout=300)
        assert second.returncode == 0, second.stderr
        assert server.stats()["successes"] == len(rows) - 40
    answers_match_with_errors_retried(outdir, rows)


def answers_match_with_errors_retried(outdir: Path, rows: list[dict[str, Any]]) -> None:
    """Every row succeeded exactly once; the error log holds only the retryable 1113s."""
    prompt_of = {row["id"]: row["prompt"] for row in rows}
    results = read_table(outdir / "results").select(["id", "content"]).to_pylist()
    assert sorted(r["id"] for r in results) == sorted(prompt_of)
    for row in results:
        assert row["content"] == answer_for([{"role": "user", "content": prompt_of[row["id"]]}])
    errors = read_table(outdir / "errors").to_pylist()
    assert {(e["error_code"], e["retryable"]) for e in errors} <= {("1113", True)}


def job_over(
    tmp_path: Path, rows: list[dict[str, Any]], server: ZaiServer, concurrency: int
) -> Job:
    """The Job of the Python API tests: ``rows`` in tmp_path/in.jsonl, answered into
    tmp_path/out by ``server``."""
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    return Job(
        input_path=str(path),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        concurrency=concurrency,
    )


def test_python_api_runs_a_job_on_a_cluster(tmp_path: Path) -> None:
    """`zbatch.run(job, cluster="local:2")` is the same run as the CLI's."""
    rows = prompt_rows(60)
    with ZaiServer(latency=0.02) as server:
        job = job_over(tmp_path, rows, server, concurrency=4)
        result = run_job(job, api_key="zk-test", cluster="local:2")
        assert server.stats()["max_inflight_seen"] <= 4
    assert result.exit_code == 0
    assert result.stats.ok == len(rows)
    answers_match(tmp_path / "out", rows)


def test_bad_cluster_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    proc = run_zbatch("run", "-i", str(path), "-o", str(tmp_path / "o"), "--cluster", "yarn")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "Error: --cluster: expected dask://HOST:PORT or local:N, not 'yarn'"
    )
    both = run_zbatch(
        "run", "-i", str(path), "-o", str(tmp_path / "o"), "--cluster", "local:2", "--shard", "0/2"
    )
    assert both.returncode == 2
    assert "--shard and --cluster do not go together" in both.stderr


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    with local_cluster(threads_per_worker=1) as connected:
        yield connected


def test_one_shard_per_task_in_a_users_own_dask_graph(tmp_path: Path, dask_client: Any) -> None:
    """`zbatch.cluster.run_shard(job, "K/N")` as tasks of a user's own graph: the shards
    share the job's cluster-wide cap and together land every row exactly once."""
    rows = prompt_rows(120)
    with ZaiServer(latency=0.05) as server:
        job = job_over(tmp_path, rows, server, concurrency=3)
        futures = [
            dask_client.submit(run_shard, job, f"{k}/4", api_key="zk-test", pure=False)
            for k in range(4)
        ]
        outcomes = dask_client.gather(futures)
        stats = server.stats()
    assert stats["max_inflight_seen"] <= 3
    assert sum(outcome.stats.ok for outcome in outcomes) == len(rows)
    assert all(outcome.stopped is None for outcome in outcomes)
    answers_match(tmp_path / "out", rows)
