"""Whole runs with input and OUTDIR on a loopback S3 (moto), through the installed ``zbatch``.

kill -9 and resume with a second thread reading every part the listing shows, two runs racing
for the lease, Parquet and JSONL input from s3, status / compact / export from and to s3, the
clear errors, and no byte of the secret key anywhere zbatch wrote or printed.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import prompt_rows, run_zbatch, start_zbatch, wait_for, zbatch_env
from s3_server import S3, SECRET_KEY, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import ZaiServer, answer_for

import zbatch


def _env(s3: S3, **extra: str) -> dict[str, str]:
    return zbatch_env(**{**s3.env, **extra})


def _put_jsonl(s3: S3, key: str, rows: list[dict[str, Any]]) -> str:
    s3.fs().pipe(f"{s3.bucket}/{key}", "".join(json.dumps(r) + "\n" for r in rows).encode())
    return s3.url(key)


def _put_parquet(s3: S3, key: str, rows: list[dict[str, Any]]) -> str:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=7)
    s3.fs().pipe(f"{s3.bucket}/{key}", sink.getvalue())
    return s3.url(key)


def _parts(s3: S3, folder: str) -> list[str]:
    try:
        names = s3.fs().ls(f"{s3.bucket}/{folder}", detail=False)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".parquet"))


def _result_rows(s3: S3, outdir: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in _parts(s3, f"{outdir}/results"):
        rows += pq.read_table(io.BytesIO(s3.fs().cat_file(key))).to_pylist()
    return rows


def _assert_each_answer_is_its_own(rows: list[dict[str, Any]], prompts: dict[str, str]) -> None:
    for row in rows:
        expected = answer_for([{"role": "user", "content": prompts[row["id"]]}])
        assert row["content"] == expected, row["id"]


def _assert_secret_nowhere(s3: S3, *outputs: str) -> None:
    secret = SECRET_KEY.encode()
    for key in s3.fs().find(s3.bucket):
        assert secret not in s3.fs().cat_file(key), key
    for text in outputs:
        assert SECRET_KEY not in text


def _run(s3: S3, srv: ZaiServer, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = run_zbatch("run", *args, "--base-url", srv.base_url, env=_env(s3))
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


class ListingReader(threading.Thread):
    """Lists results/ over and over during a run and reads every part it lists, whole.

    A part that is listed but cannot be read as Parquet would be a half-written object."""

    def __init__(self, s3: S3, folder: str) -> None:
        super().__init__(daemon=True)
        self.s3, self.folder = s3, folder
        self.stop = threading.Event()
        self.seen: dict[str, int] = {}  # part -> rows
        self.broken: list[str] = []

    def run(self) -> None:
        fs = self.s3._client()  # a client of its own: s3fs clients are not shared across threads
        while not self.stop.is_set():
            try:
                names = fs.ls(f"{self.s3.bucket}/{self.folder}", detail=False)
            except FileNotFoundError:
                continue
            for name in names:
                if name.endswith(".parquet") and name not in self.seen:
                    try:
                        self.seen[name] = pq.read_table(io.BytesIO(fs.cat_file(name))).num_rows
                    except FileNotFoundError:
                        pass  # compacted or archived away between listing and reading
                    except pa.ArrowException as exc:
                        self.broken.append(f"{name}: {exc}")


def test_kill_9_mid_run_then_resume_settles_every_id_exactly_once(s3: S3) -> None:
    rows = prompt_rows(240)
    prompts = {r["id"]: r["prompt"] for r in rows}
    source = _put_jsonl(s3, "in/rows.jsonl", rows)
    outdir = s3.url("out")
    reader = ListingReader(s3, "out/results")
    reader.start()
    with ZaiServer() as srv:
        srv.configure(latency=0.08)
        args = ["run", "-i", source, "-o", outdir, "--base-url", srv.base_url]
        proc = start_zbatch(*args, "--concurrency", "4", "--part-rows", "5", env=_env(s3))
        try:
            wait_for(lambda: len(reader.seen) >= 3 or proc.poll() is not None, timeout=120)
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.communicate(timeout=60)
        killed_with = sum(dict(reader.seen).values())  # a copy: the reader thread adds to it
        assert 0 < killed_with < len(rows)
        sent_before = srv.stats()["requests"]
        srv.configure(latency=0.0)
        # The killed run's lease names a dead pid on this host: taken over at once.
        resumed = _run(s3, srv, "-i", source, "-o", outdir)
        # The resume sent only what was not committed: never the parts the reader saw.
        assert srv.stats()["requests"] - sent_before <= len(rows) - killed_with
    wait_for(lambda: len(reader.seen) == len(_parts(s3, "out/results")), timeout=60)
    reader.stop.set()
    reader.join(timeout=60)
    assert reader.broken == []
    results = _result_rows(s3, "out")
    assert Counter(r["id"] for r in results) == Counter(list(prompts))  # each id exactly once
    _assert_each_answer_is_its_own(results, prompts)
    _assert_secret_nowhere(s3, resumed.stdout, resumed.stderr)


def test_two_runs_racing_for_the_lease_one_wins_the_other_exits_75_naming_it(s3: S3) -> None:
    rows = prompt_rows(40)
    source = _put_jsonl(s3, "in.jsonl", rows)
    outdir = s3.url("out")
    with ZaiServer() as srv:
        srv.configure(latency=0.2)
        args = ["run", "-i", source, "-o", outdir, "--base-url", srv.base_url, "-c", "2"]
        first, second = (start_zbatch(*args, env=_env(s3)) for _ in range(2))
        outputs = {p.pid: p.communicate(timeout=120) for p in (first, second)}
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 75], outputs
    winner = first if first.returncode == 0 else second
    loser = second if winner is first else first
    message = outputs[loser.pid][1]
    assert f"holds {outdir}/.lock (pid {winner.pid} on " in message
    assert "Traceback" not in message
    assert Counter(r["id"] for r in _result_rows(s3, "out")) == Counter(r["id"] for r in rows)
    _assert_secret_nowhere(s3, *outputs[first.pid], *outputs[second.pid])


def test_a_run_finds_the_lease_held_by_a_live_process_and_exits_75(s3: S3) -> None:
    from zbatch.store.objectstore import ObjectStorage

    source = _put_jsonl(s3, "in.jsonl", prompt_rows(3))
    holder = ObjectStorage(s3.url("out"))
    with ZaiServer() as srv, holder.lock(".lock"):
        proc = _run(s3, srv, "-i", source, "-o", s3.url("out"), expect=75)
        assert srv.stats()["requests"] == 0
    assert "another zbatch run holds" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_parquet_input_status_compact_and_export_from_and_to_s3(s3: S3, tmp_path: Path) -> None:
    rows = prompt_rows(30, prefix="pq")
    prompts = {r["id"]: r["prompt"] for r in rows}
    source = _put_parquet(s3, "data/part-a.parquet", rows[:20])
    _put_parquet(s3, "data/part-b.parquet", rows[20:])
    outdir = s3.url("runs/pq")
    env = _env(s3)
    with ZaiServer() as srv:
        _run(s3, srv, "-i", s3.url("data/*.parquet"), "-o", outdir, "--part-rows", "10")
        assert source.endswith("part-a.parquet")
    status = run_zbatch("status", outdir, "--json", env=env)
    assert status.returncode == 0, status.stderr
    figures = json.loads(status.stdout)
    assert (figures["done"], figures["failed"], figures["pending"]) == (30, 0, 0)

    before = _parts(s3, "runs/pq/results")
    compact = run_zbatch("compact", outdir, env=env)
    assert compact.returncode == 0, compact.stderr
    assert len(before) > 1
    assert len(_parts(s3, "runs/pq/results")) == 1

    to_s3 = run_zbatch("export", outdir, "-o", s3.url("exports/all.parquet"), env=env)
    assert to_s3.returncode == 0, to_s3.stderr
    exported = pq.read_table(io.BytesIO(s3.fs().cat_file(f"{s3.bucket}/exports/all.parquet")))
    assert sorted(exported.column("id").to_pylist()) == sorted(prompts)
    _assert_each_answer_is_its_own(exported.to_pylist(), prompts)

    local = tmp_path / "all.jsonl"
    to_local = run_zbatch("export", outdir, "-o", str(local), env=env)
    assert to_local.returncode == 0, to_local.stderr
    lines = [json.loads(line) for line in local.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(prompts)
    _assert_each_answer_is_its_own(lines, prompts)
    from_api = zbatch.read_results(outdir)  # the Python API takes the URL as the CLI does
    assert sorted(from_api.column("id").to_pylist()) == sorted(prompts)
    _assert_secret_nowhere(s3, status.stdout, compact.stdout, to_s3.stdout, to_local.stdout)
    assert SECRET_KEY.encode() not in local.read_bytes()


def test_force_archives_the_old_generation_on_s3_and_dry_run_reads_s3(s3: S3) -> None:
    """--force moves the old parts away (a create-only copy, then a delete: no rename on S3)."""
    rows = prompt_rows(6)
    source = _put_jsonl(s3, "in.jsonl", rows)
    outdir = s3.url("out")
    with ZaiServer() as srv:
        _run(s3, srv, "-i", source, "-o", outdir)
        old = _parts(s3, "out/results")
        plan = _run(s3, srv, "-i", source, "-o", outdir, "--dry-run")
        assert srv.stats()["requests"] == len(rows)  # the dry run sent nothing
        refused = _run(s3, srv, "-i", source, "-o", outdir, "--model", "glm-4.5", expect=2)
        _run(s3, srv, "-i", source, "-o", outdir, "--model", "glm-4.5", "--force")
    assert "--force" in refused.stderr
    assert "6 in input, 6 already done, 0 to send" in plan.stdout
    archived = s3.fs().find(f"{s3.bucket}/out/generations")
    assert sorted(k.rsplit("/", 1)[-1] for k in archived if "/results/" in k) == sorted(
        k.rsplit("/", 1)[-1] for k in old
    )
    results = _result_rows(s3, "out")
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)
    assert {r["model"] for r in results} == {"glm-4.5"}


def test_a_local_outdir_exports_to_s3_and_reads_local_input_by_file_url(
    s3: S3, tmp_path: Path
) -> None:
    rows = prompt_rows(5)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ZaiServer() as srv:
        _run(s3, srv, "-i", f"file://{source}", "-o", str(tmp_path / "out"))
    done = run_zbatch("export", str(tmp_path / "out"), "-o", s3.url("x.csv"), env=_env(s3))
    assert done.returncode == 0, done.stderr
    assert s3.fs().cat_file(f"{s3.bucket}/x.csv").count(b"\n") == len(rows) + 1
    for path in tmp_path.rglob("*"):  # the local OUTDIR holds no credential either
        assert not path.is_file() or SECRET_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("s3://zb-no-such-bucket/out", "the bucket zb-no-such-bucket does not exist"),
        ("ftp://host/out", "ftp:// is not supported"),
    ],
)
def test_an_unusable_outdir_exits_2_before_sending(s3: S3, target: str, message: str) -> None:
    source = _put_jsonl(s3, "in.jsonl", prompt_rows(3))
    with ZaiServer() as srv:
        proc = _run(s3, srv, "-i", source, "-o", target, expect=2)
        assert srv.stats()["requests"] == 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_endpoint_url_holding_the_secret_never_shows_it(s3: S3) -> None:
    """Credentials in AWS_ENDPOINT_URL's userinfo: the run fails (exit 2) without quoting them."""
    source = _put_jsonl(s3, "in.jsonl", prompt_rows(3))
    host = s3.endpoint.removeprefix("http://")
    env = _env(s3, AWS_ENDPOINT_URL=f"http://admin:{SECRET_KEY}@{host}", AWS_MAX_ATTEMPTS="1")
    with ZaiServer() as srv:
        args = ["run", "-i", source, "-o", s3.url("out"), "--base-url", srv.base_url]
        proc = run_zbatch(*args, env=env)
        assert srv.stats()["requests"] == 0
    assert proc.returncode == 2, proc.stderr
    assert SECRET_KEY not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_secret_nowhere(s3)
