"""--ping: URL/start at launch, then URL on success or URL/<exit code>; the pings arrive in
that order for each documented exit code, a kill -9 leaves a start without an end, and a
dead ping endpoint never fails the run nor holds it for more than its bounded attempts."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
from conftest import (
    TEST_KEY,
    fast_job,
    input_and_outdir,
    prompt_rows,
    run_against,
    run_zbatch,
    start_zbatch,
    stop_process,
    wait_for,
)
from monitor_server import MonitorServer
from zai_server import ZaiServer

from zbatch.ops import pings
from zbatch.ops.pings import Pinger
from zbatch.store import OutputDir

TOKEN = "tok-5ecret-8f1e2d"  # a healthchecks.io ping URL's uuid is its secret
PRICED = '[request]\nmax_tokens = 10\n[prices]\n"glm-4.6" = { input = 1000.0, output = 1000.0 }\n'


def ping_args(mon: MonitorServer, check: str = TOKEN) -> tuple[str, str]:
    return "--ping", f"{mon.url}/ping/{check}"


def expected(code: int, check: str = TOKEN) -> list[str]:
    end = f"/ping/{check}" if code == 0 else f"/ping/{check}/{code}"
    return [f"/ping/{check}/start", end]


@pytest.mark.parametrize(
    ("code", "rows", "extra"),
    [
        (0, prompt_rows(8), ()),
        (1, [*prompt_rows(4), {"id": "x", "prompt": "Blocked FAIL=1301*"}], ()),
        (5, prompt_rows(8), ("--max-cost", "0.001")),
    ],
)
def test_pings_start_then_the_outcome(
    tmp_path: Path, code: int, rows: list[dict[str, str]], extra: tuple[str, ...]
) -> None:
    inp, out = input_and_outdir(tmp_path, rows)
    job = tmp_path / "priced.toml"
    job.write_text(PRICED, encoding="utf-8")
    with ZaiServer() as srv, MonitorServer() as mon:
        proc = run_against(
            srv, str(job), "-i", str(inp), "-o", str(out), *ping_args(mon), *extra, expect=code
        )
        assert mon.paths() == expected(code)
    assert {r.method for r in mon.seen()} == {"GET"}
    assert TOKEN not in proc.stderr + proc.stdout
    for name in ("job.json", "run.log", "summary.json"):
        text = (out / name).read_text()
        assert TOKEN not in text and TEST_KEY not in text
    assert json.loads((out / "job.json").read_text())["settings"]["ping"] == f"{mon.url}/…"


def test_pings_for_a_fatal_stop_a_bad_input_a_held_lock_and_a_dead_endpoint(
    tmp_path: Path,
) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(6))
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    with ZaiServer() as srv, MonitorServer() as mon:
        srv.configure(fatal_code="1113")  # the account is empty: exit 3
        run_against(srv, "-i", str(inp), "-o", str(out), *ping_args(mon, "fatal"), expect=3)
        srv.configure(fatal_code=None)
        missing = tmp_path / "missing.jsonl"
        run_against(srv, "-i", str(missing), "-o", str(out), *ping_args(mon, "input"), expect=2)
        with OutputDir(str(out)).locked():
            run_against(srv, "-i", str(inp), "-o", str(out), *ping_args(mon, "lock"), expect=75)
        run_zbatch(
            "run", fast_job(tmp_path, down_after=0.3), "-i", str(inp), "-o", str(out),
            "--base-url", dead_url, *ping_args(mon, "down"),
        )  # fmt: skip
        assert mon.paths() == [
            *expected(3, "fatal"),
            *expected(2, "input"),
            *expected(75, "lock"),
            *expected(69, "down"),
        ]
    dead.close()


def test_a_kill_9_leaves_a_start_without_an_end_and_sigterm_pings_143(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(200))
    with ZaiServer(latency=0.2) as srv, MonitorServer() as mon:
        args = ["run", "-i", str(inp), "-o", str(out), "--base-url", srv.base_url, "-c", "2"]
        proc = start_zbatch(*args, *ping_args(mon, "killed"))
        wait_for(lambda: mon.paths() == ["/ping/killed/start"])
        wait_for(lambda: srv.stats()["successes"] > 0)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert mon.paths() == ["/ping/killed/start"]

        srv.reset_stats()
        proc = start_zbatch(*args, *ping_args(mon, "term"))
        wait_for(lambda: "/ping/term/start" in mon.paths())
        wait_for(lambda: srv.stats()["successes"] > 0)  # the run's signal handling is on
        stop_process(proc, signal.SIGTERM)
        assert proc.returncode == 143
        assert mon.paths() == ["/ping/killed/start", *expected(143, "term")]


def test_a_failing_ping_endpoint_costs_only_the_configured_attempts(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(5))
    with ZaiServer() as srv, MonitorServer(status=500) as mon:
        proc = run_against(srv, "-i", str(inp), "-o", str(out), *ping_args(mon), expect=0)
        starts = [p for p in mon.paths() if p.endswith("/start")]
        assert len(starts) == pings.ATTEMPTS
        assert mon.paths() == [*starts, *[f"/ping/{TOKEN}"] * pings.ATTEMPTS]
    warnings = [line for line in proc.stderr.splitlines() if "failed after" in line]
    assert len(warnings) == 2 and all(f"{mon.url}/…" in line for line in warnings)
    assert TOKEN not in proc.stderr
    assert len(list((out / "results").glob("*.parquet"))) >= 1


def test_a_ping_that_gets_no_answer_gives_up_after_its_attempts() -> None:
    """A black-holed endpoint: each attempt ends at its timeout, and only so many are made;
    the default budget is a few seconds per ping."""
    with MonitorServer(hang=True) as mon:
        pinger = Pinger(f"{mon.url}/ping/{TOKEN}", timeout=0.2, attempts=2, pause=0.0)
        pinger.start()
        pinger.end(4)
        assert mon.paths() == [f"/ping/{TOKEN}/start"] * 2 + [f"/ping/{TOKEN}/4"] * 2
    assert Pinger("http://127.0.0.1/x").budget <= 8


def test_a_ping_url_that_is_not_http_is_refused_without_showing_its_token(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(2))
    proc = run_zbatch("run", "-i", str(inp), "-o", str(out), "--ping", f"ftp://host/{TOKEN}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "Error: the command line: run.ping must be an http:// or https:// URL, not 'ftp://host/…'"
    )
    assert not out.exists()
