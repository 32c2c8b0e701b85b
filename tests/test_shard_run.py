"""Shards of one job, as separate zbatch processes at the same time, into one OUTDIR."""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import (
    outcome_ids,
    prompt_rows,
    read_export,
    run_args,
    run_zbatch,
    start_zbatch,
    write_jsonl,
    zbatch_env,
)
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import ZaiServer, answer_for

import zbatch
from zbatch.store import OutputDir

SHARDS = 3


def shard_of(row_id: str) -> int:
    """SPEC's rule, written out here rather than imported."""
    return int.from_bytes(hashlib.sha1(row_id.encode()).digest()[:8], "big") % SHARDS


def answer(prompt: str) -> str:
    return answer_for([{"role": "user", "content": prompt}])


@pytest.fixture
def job_input(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    rows = prompt_rows(240)
    return write_jsonl(tmp_path / "in.jsonl", rows), {r["prompt"]: r["id"] for r in rows}


def test_three_shard_processes_share_one_outdir(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    """Three `zbatch run --shard K/3` processes at once, each against its own loopback server
    (so each server's record is one process's requests): each asked only for its shard's
    ids, every id is in the results exactly once with its own answer, and status, export and
    a resume see all shards."""
    path, id_of = job_input
    outdir = tmp_path / "out"
    with ExitStack() as stack:
        servers = [stack.enter_context(ZaiServer(latency=0.02)) for _ in range(SHARDS)]
        procs = [
            start_zbatch(
                *run_args(
                    path, outdir, servers[k], "--concurrency", "4", "--shard", f"{k}/{SHARDS}"
                )
            )
            for k in range(SHARDS)
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        asked = [server.stats()["answered_prompts"] for server in servers]

    for k, prompts in enumerate(asked):
        assert prompts, f"shard {k} sent nothing"
        assert {shard_of(id_of[p]) for p in prompts} == {k}
    assert sorted(p for prompts in asked for p in prompts) == sorted(id_of)

    results, errors = outcome_ids(outdir)
    assert sorted(results) == sorted(id_of.values())
    assert errors == []
    # each shard wrote its own parts, named after it
    names = [p.name for p in (outdir / "results").glob("*.parquet")]
    for k in range(SHARDS):
        assert any(f"-{k}of{SHARDS}-" in name for name in names), names

    exported = tmp_path / "all.jsonl"
    assert run_zbatch("export", str(outdir), "-o", str(exported)).returncode == 0
    rows = read_export(exported)
    prompt_of = {row_id: prompt for prompt, row_id in id_of.items()}
    assert sorted(r["id"] for r in rows) == sorted(id_of.values())
    for row in rows:
        assert row["content"] == answer(prompt_of[row["id"]])

    status = run_zbatch("status", str(outdir), "--json")
    assert json.loads(status.stdout)["done"] == len(id_of)

    # A whole-job resume against a new server sends nothing: every shard's ids count as done.
    with ZaiServer() as again:
        proc = run_zbatch(*run_args(path, outdir, again))
        assert proc.returncode == 0, proc.stderr
        assert again.stats()["requests"] == 0


def test_a_shard_never_resends_an_id_another_shard_committed(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    """A whole-job run committed everything; shard runs afterwards (with another N) send
    nothing and count their own rows as skipped, not the other shards' rows."""
    path, id_of = job_input
    outdir = tmp_path / "out"
    with ZaiServer() as server:
        first = run_zbatch(*run_args(path, outdir, server))
        assert first.returncode == 0, first.stderr
        server.reset_stats()
        proc = run_zbatch(*run_args(path, outdir, server, "--shard", "1/2"))
        assert proc.returncode == 0, proc.stderr
        assert server.stats()["requests"] == 0
    mine = sum(
        1
        for row_id in id_of.values()
        if int.from_bytes(hashlib.sha1(row_id.encode()).digest()[:8], "big") % 2 == 1
    )
    summary = json.loads((outdir / "summaries" / "1of2.json").read_text())
    assert summary["shard"] == "1/2"
    assert summary["rows"]["skipped_already_done"] == mine
    assert summary["rows"]["input"] == mine


def test_a_shard_of_another_job_is_refused(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    """job.json is written by the first shard and checked by every later one: a shard with
    another template is refused before anything is sent."""
    path, _ = job_input
    outdir = tmp_path / "out"
    with ZaiServer() as server:
        base = run_args(path, outdir, server)
        assert run_zbatch(*base, "--shard", "0/3").returncode == 0
        sent = server.stats()["requests"]
        job_json = (outdir / "job.json").read_bytes()
        refused = run_zbatch(*base, "--shard", "1/3", "--template", "Other: {prompt}")
        assert refused.returncode == 2
        assert "holds results of a different request" in refused.stderr
        assert "template" in refused.stderr
        assert server.stats()["requests"] == sent
        assert run_zbatch(*base, "--shard", "1/3", "--concurrency", "3").returncode == 0
    assert (outdir / "job.json").read_bytes() == job_json  # written once


def test_force_with_a_shard_is_refused(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    path, _ = job_input
    proc = run_zbatch(
        "run", "-i", str(path), "-o", str(tmp_path / "out"), "--shard", "0/2", "--force"
    )
    assert proc.returncode == 2
    assert "--force with --shard would move the other shards' results away" in proc.stderr


def test_bad_shard_flag_is_one_line_and_exit_2(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    path, _ = job_input
    proc = run_zbatch("run", "-i", str(path), "-o", str(tmp_path / "out"), "--shard", "3/3")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: --shard: the shard index must be between 0 and 2, not 3 (shards are numbered "
        "from 0)"
    )
    assert not (tmp_path / "out").exists()


def test_compact_refuses_while_a_shard_runs(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]]
) -> None:
    """compact takes every shard's lock: with shard 2/3 holding its own, it says so and
    changes nothing; once the shard is done it merges every shard's parts."""
    path, id_of = job_input
    outdir = tmp_path / "out"
    with ZaiServer() as server:
        for k in range(SHARDS):
            proc = run_zbatch(*run_args(path, outdir, server, "--shard", f"{k}/{SHARDS}"))
            assert proc.returncode == 0, proc.stderr
    before = sorted(p.name for p in (outdir / "results").glob("*.parquet"))
    assert len(before) == SHARDS
    with OutputDir(str(outdir)).locked((2, SHARDS)):
        proc = run_zbatch("compact", str(outdir))
        assert proc.returncode == 75
        assert ".lock-2of3" in proc.stderr
    assert sorted(p.name for p in (outdir / "results").glob("*.parquet")) == before
    assert run_zbatch("compact", str(outdir)).returncode == 0
    assert len(list((outdir / "results").glob("*.parquet"))) == 1
    results, _ = outcome_ids(outdir)
    assert sorted(results) == sorted(id_of.values())


def test_shard_processes_share_an_outdir_on_object_storage(
    tmp_path: Path, job_input: tuple[Path, dict[str, str]], s3: S3
) -> None:
    """The same three shards at once, into an s3:// OUTDIR (loopback S3): every id once,
    and `zbatch status` on the bucket counts them all."""
    path, id_of = job_input
    outdir = s3.url("out")
    env = zbatch_env(**s3.env)
    with ZaiServer(latency=0.02) as server:
        procs = [
            start_zbatch(
                *run_args(path, outdir, server, "--concurrency", "4", "--shard", f"{k}/{SHARDS}"),
                env=env,
            )
            for k in range(SHARDS)
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
        assert server.stats()["successes"] == len(id_of)
    ids = zbatch.read_results(outdir).column("id").to_pylist()
    assert sorted(ids) == sorted(id_of.values())
    status = run_zbatch("status", outdir, "--json", env=env)
    assert json.loads(status.stdout)["done"] == len(id_of)
