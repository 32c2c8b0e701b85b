"""Ctrl-C on a real terminal (a pty: the line discipline sends SIGINT to the foreground
process group, as a user's keypress does) while many requests are in flight; and hedging of a
stuck attempt at the end of the input."""

from __future__ import annotations

import json
import os
import pty
import select
import time
import warnings
from collections import Counter
from pathlib import Path

from conftest import (
    ZBATCH,
    input_and_outdir,
    prompt_rows,
    read_table,
    run_against,
    run_args,
    wait_for,
    zbatch_env,
)
from zai_server import ZaiServer

GRACE = 5.0


def read_until_exit(fd: int, pid: int, timeout: float) -> tuple[str, int]:
    """Everything the child writes to the terminal, and its exit status."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    _, status = os.waitpid(pid, 0)
    return output.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_ctrl_c_on_a_terminal_with_many_in_flight_exits_130_and_says_where_to_resume(
    tmp_path: Path,
) -> None:
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=2.0) as srv:
        args = run_args(inp, out, srv, "-c", "32", "--grace", str(GRACE))
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() beside the server's thread; the child only execs.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid, fd = pty.fork()
        if pid == 0:  # the child: its terminal is the pty
            os.execve(ZBATCH, [ZBATCH, *args], zbatch_env())
        try:
            wait_for(lambda: srv.stats()["inflight"] >= 24, timeout=60)
            os.write(fd, b"\x03")  # Ctrl-C, through the terminal
            output, code = read_until_exit(fd, pid, timeout=GRACE + 60)
        finally:
            os.close(fd)
        assert code == 130, output
        assert "interrupted by SIGINT" in output and str(out) in output
        assert "run the same command to resume" in output
        answered_first = srv.stats()["successes"]
        assert len(read_table(out / "results")) == answered_first  # in-flight ones kept

        srv.configure(latency=0.01)
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "32")
        answered = Counter(srv.stats()["answered_prompts"])
    assert max(answered.values()) == 1
    assert Counter(read_table(out / "results").column("id").to_pylist()) == Counter(
        r["id"] for r in rows
    )


def test_a_stuck_attempt_at_the_end_is_hedged_and_its_row_recorded_once(tmp_path: Path) -> None:
    """The last row's first attempt hangs (FAIL=slow); its hedge answers; one result row,
    both attempts billed."""
    rows = prompt_rows(100)
    rows[-1]["prompt"] = "the stuck one FAIL=slow"
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01, slow_seconds=60) as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "4", "--hedge", timeout=120)
        assert srv.stats()["answered_prompts"].count("the stuck one FAIL=slow") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hedged_requests"] >= 1
    ids = read_table(out / "results").column("id").to_pylist()
    assert Counter(ids) == Counter(r["id"] for r in rows)
    # The cancelled first attempt is charged like its twin: one answer more than rows.
    assert json.loads((out / "spend.json").read_text())["answers"] >= 101


def test_no_hedge_leaves_a_stuck_attempt_alone(tmp_path: Path) -> None:
    rows = prompt_rows(30)
    rows[-1]["prompt"] = "the stuck one FAIL=slow"
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01, slow_seconds=1.5) as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "4", "--no-hedge")
        assert srv.stats()["requests"] == 30
    assert json.loads((out / "summary.json").read_text())["hedged_requests"] == 0
