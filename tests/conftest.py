"""Shared fixtures: the loopback Z.AI server and running the installed zbatch script."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from zai_server import ZaiServer

# SPEC.md "Result columns" and "Error columns", in order: the oracle, written out rather than
# imported from zbatch.
SPEC_RESULT_COLUMNS = [
    ("id", pa.string()),
    ("content", pa.string()),
    ("reasoning_content", pa.string()),
    ("finish_reason", pa.string()),
    ("model", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("total_tokens", pa.int64()),
    ("cached_tokens", pa.int64()),
    ("request_id", pa.string()),
    ("attempts", pa.int32()),
    ("latency_ms", pa.int32()),
    ("completed_at", pa.timestamp("ms", tz="UTC")),
    ("cached", pa.bool_()),
]
SPEC_ERROR_COLUMNS = [
    ("id", pa.string()),
    ("error_type", pa.string()),
    ("status_code", pa.int32()),
    ("error_code", pa.string()),
    ("message", pa.string()),
    ("attempts", pa.int32()),
    ("retryable", pa.bool_()),
    ("failed_at", pa.timestamp("ms", tz="UTC")),
    ("answer", pa.string()),
]

ZBATCH = shutil.which("zbatch", path=str(Path(sys.executable).parent)) or "zbatch"
TEST_KEY = "zk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def own_cache_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own XDG_CACHE_HOME: no test reads or fills the user's response
    cache (~/.cache/zbatch), and no test sees another's cached answers."""
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def server() -> Iterator[ZaiServer]:
    """A fresh fake Z.AI server on 127.0.0.1 (settings can be changed with .configure)."""
    with ZaiServer() as srv:
        yield srv


def zbatch_env(**extra: str) -> dict[str, str]:
    """The environment for a zbatch subprocess: a test key, no proxy, no inherited base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAI_", "HTTP", "ALL_PROXY"))}
    env["ZAI_API_KEY"] = TEST_KEY
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def run_zbatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script to the end and capture its output."""
    return subprocess.run(
        [ZBATCH, *args],
        env=env or zbatch_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_against(
    srv: ZaiServer,
    *args: str,
    expect: int | None = 0,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``zbatch run ARGS --base-url <server>``; checks the exit code unless ``expect`` is None."""
    proc = run_zbatch("run", *args, "--base-url", srv.base_url, env=env, timeout=timeout)
    if expect is not None:
        assert proc.returncode == expect, (
            f"exit {proc.returncode}, expected {expect}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return proc


def run_args(inp: Path | str, out: Path | str, srv: ZaiServer, *extra: str) -> list[str]:
    """``zbatch run``'s arguments for rows from ``inp`` into ``out``, sent to ``srv``."""
    return ["run", "-i", str(inp), "-o", str(out), "--base-url", srv.base_url, *extra]


def fast_job(tmp_path: Path, **limits: Any) -> str:
    """A job file with a quick backoff, plus any other [limits] settings."""
    settings = {"backoff_base": 0.02, "backoff_cap": 0.2, **limits}
    lines = ["[limits]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    path = tmp_path / "fast.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def start_zbatch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the console script in the background (for signals and kill -9)."""
    return subprocess.Popen(
        [ZBATCH, *args],
        env=env or zbatch_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Any, *, timeout: float = 30, interval: float = 0.02) -> None:
    """Poll until predicate() is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Send a signal and collect the output (kills it if it does not exit in 60 s)."""
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"zbatch did not exit after {sig}: {err}") from None


@contextmanager
def local_cluster(*, threads_per_worker: int) -> Iterator[Any]:
    """A client of a Dask LocalCluster of two worker processes, its dashboards on free ports."""
    import distributed  # here, so that only the cluster tests pay for importing Dask

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def input_and_outdir(tmp_path: Path, rows: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """A run's INPUT, ``rows`` written to tmp_path/in.jsonl, and its OUTDIR, tmp_path/out."""
    return write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out"


def prompt_rows(count: int, *, prefix: str = "row", start: int = 0) -> list[dict[str, Any]]:
    """Rows with unique ids and prompts whose fake answer is derived from the prompt."""
    return [
        {"id": f"{prefix}{i:05d}", "prompt": f"Question number {i} about {prefix}"}
        for i in range(start, start + count)
    ]


def read_table(folder: Path) -> pa.Table:
    """Every committed part of results/ or errors/, read the way a user would."""
    if not folder.is_dir() or not any(folder.glob("part-*.parquet")):
        return pa.table({"id": pa.array([], pa.string())})
    return ds.dataset(folder, format="parquet").to_table()


def read_export(path: Path) -> list[dict[str, Any]]:
    """The rows `zbatch export` wrote to a .parquet, .jsonl or .csv file (CSV blanks as None)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {k: v if v != "" else None for k, v in row.items()} for row in csv.DictReader(handle)
        ]


def outcome_ids(outdir: Path) -> tuple[list[str], list[str]]:
    """(ids in results, ids in errors), with repeats kept so tests can check 'exactly once'."""
    results = read_table(outdir / "results").column("id").to_pylist()
    errors = read_table(outdir / "errors").column("id").to_pylist()
    return results, errors
