"""`--cluster dask://HOST:PORT` at something that is not a Dask scheduler: a "connecting to"
line, a bounded wait, one line and exit 2 — never a hang or distributed's MemoryError. And at a
real scheduler (a LocalCluster of worker processes) the same check lets the run through."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import local_cluster, prompt_rows, read_table, run_against, write_jsonl, zbatch_env
from zai_server import ZaiServer

# Dask's own connect timeout, which the check uses: short here, so a refusal comes quickly.
FAST = zbatch_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP listener on loopback that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture
def http_port() -> Iterator[int]:
    """An HTTP server on loopback (as a scheduler's dashboard is)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def refused(tmp_path: Path, port: int) -> str:
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    with ZaiServer() as srv:
        args = ["-i", str(source), "-o", str(tmp_path / "out")]
        proc = run_against(srv, *args, "--cluster", f"dask://127.0.0.1:{port}", expect=2, env=FAST)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    where = f"dask://127.0.0.1:{port}"
    assert lines[0] == f"connecting to the Dask scheduler at {where} (up to 2 s) ..."
    assert len(lines) == 2 and lines[1].startswith("Error: --cluster: ")
    assert (
        not (tmp_path / "out" / "results").exists()
        or not read_table(tmp_path / "out" / "results").num_rows
    )
    return lines[1]


def test_a_silent_listener_is_refused_after_the_connect_timeout(tmp_path, silent_port):
    line = refused(tmp_path, silent_port)
    assert (
        f"tcp://127.0.0.1:{silent_port} accepted a connection but sent no Dask handshake "
        "within 2 s: it is not a Dask scheduler"
    ) in line


def test_an_http_server_is_refused_not_read_as_dask(tmp_path, http_port):
    line = refused(tmp_path, http_port)
    assert "it is not a Dask scheduler (an HTTP port such as the dashboard's 8787?)" in line


def test_a_closed_port_is_refused_at_once(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    line = refused(tmp_path, port)
    assert f"no Dask scheduler answers at tcp://127.0.0.1:{port}" in line


def test_a_real_scheduler_passes_the_check_and_runs_the_job(tmp_path):
    rows = prompt_rows(12)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    with local_cluster(threads_per_worker=1) as client, ZaiServer() as srv:
        address = client.scheduler.address.replace("tcp://", "dask://")
        args = ["-i", str(source), "-o", str(tmp_path / "out"), "--cluster", address]
        proc = run_against(srv, *args, env=FAST, timeout=300)
    assert proc.stderr.startswith(f"connecting to the Dask scheduler at {address}")
    ids = read_table(tmp_path / "out" / "results").column("id").to_pylist()
    assert sorted(ids) == [row["id"] for row in rows]
