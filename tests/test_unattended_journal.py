"""The answer journal: after a kill -9, the next run replays what the killed run received and
buys again only the last window's answers; a kill -9 during that replay changes nothing.
Real processes, real SIGKILL, the loopback server."""

from __future__ import annotations

import json
import math
import resource
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    ZBATCH,
    input_and_outdir,
    read_table,
    run_against,
    run_args,
    start_zbatch,
    wait_for,
    zbatch_env,
)
from faults import CRASHED
from helpers import run_wrapped
from zai_server import ZaiServer, answer_for

CONCURRENCY = 8
LATENCY = 0.05


def journal_rows(count: int) -> list[dict[str, str]]:
    """Every tenth row is refused by the content filter, so the journal holds error rows too."""
    return [
        {"id": f"r{i:05d}", "prompt": f"question {i}" + (" FAIL=1301*" if i % 10 == 3 else "")}
        for i in range(count)
    ]


def killed_run(srv: ZaiServer, inp: Path, out: Path) -> tuple[Counter[str], float]:
    """Run with parts every 600 s, kill -9 after ~3 s of answers; (answers so far, rows/s)."""
    started = time.monotonic()
    proc = start_zbatch(
        *run_args(inp, out, srv, "-c", str(CONCURRENCY), "--part-seconds", "600", "-q")
    )
    try:
        wait_for(lambda: srv.stats()["successes"] >= 300, timeout=60)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    elapsed = time.monotonic() - started
    # Requests the dead process left in flight are still answered into its closed socket, and
    # counted as answered when that write goes through: they belong to this run.
    wait_for(lambda: srv.stats()["inflight"] == 0, timeout=60)
    answered = Counter(srv.stats()["answered_prompts"])
    return answered, sum(answered.values()) / elapsed


def assert_exactly_once(out: Path, rows: list[dict[str, str]]) -> None:
    results = read_table(out / "results").to_pylist()
    errors = read_table(out / "errors").to_pylist()
    prompts = {r["id"]: r["prompt"] for r in rows}
    assert Counter(r["id"] for r in results) == Counter(
        r["id"] for r in rows if "FAIL" not in r["prompt"]
    )
    for result in results:
        messages = [{"role": "user", "content": prompts[result["id"]]}]
        assert result["content"] == answer_for(messages)
    assert Counter(e["id"] for e in errors) == Counter(
        r["id"] for r in rows if "FAIL" in r["prompt"]
    )
    assert all(e["error_type"] == "content_filter" for e in errors)


def test_kill_9_rebuys_at_most_what_was_in_flight_and_the_last_window(tmp_path: Path) -> None:
    rows = journal_rows(2000)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=LATENCY) as srv:
        before, rate = killed_run(srv, inp, out)
        assert not list((out / "results").glob("*.parquet")), "parts every 600 s: none yet"
        assert list((out / "journal").glob("*.journal"))

        srv.configure(latency=0.005)  # the rest quickly
        proc = run_against(srv, "-i", str(inp), "-o", str(out), "-c", "8", expect=1)
        after = Counter(srv.stats()["answered_prompts"])

    again = sum(1 for prompt, count in after.items() if count > 1)
    allowed = CONCURRENCY + math.ceil(rate * 0.1)
    print(
        f"answered before the kill {sum(before.values())}, bought again {again}, allowed {allowed}"
    )
    assert again <= allowed, (again, allowed, sum(before.values()))
    assert "replayed" in proc.stderr
    assert_exactly_once(out, rows)
    assert not list((out / "journal").glob("*.journal")), "journals go once their rows are parts"


# Kill the replay right after it records the journal's spend, commits the replayed results,
# or commits the replayed error rows (a replayed part's number is "r" and the segment's).
REPLAY_FAULTS = {
    "ledger": {"crash": "after:write_bytes", "file": "spend.json"},
    "results": {"crash": "after:create", "name": "results/part-*-r0*"},
    "errors": {"crash": "after:create", "name": "errors/part-*-r0*"},
}


@pytest.mark.parametrize("point", ["ledger", "results", "errors"])
def test_kill_9_during_the_replay_still_records_every_answer_exactly_once(
    tmp_path: Path, point: str
) -> None:
    rows = journal_rows(1000)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=LATENCY) as srv:
        before, _ = killed_run(srv, inp, out)
        replaying = run_wrapped(REPLAY_FAULTS[point], *run_args(inp, out, srv))
        assert replaying.returncode == CRASHED, replaying.stderr
        assert Counter(srv.stats()["answered_prompts"]) == before, "a replay sends nothing"

        srv.configure(latency=0.005)
        run_against(srv, "-i", str(inp), "-o", str(out), "-c", "8", expect=1)
        answered = Counter(srv.stats()["answered_prompts"])

    assert_exactly_once(out, rows)
    # Every answer is in the spend ledger at most once, and every recorded answer is in it
    # (a journal frame holds rows and their spend together).
    ledger = json.loads((out / "spend.json").read_text())
    recorded = len(read_table(out / "results"))
    assert recorded <= ledger["answers"] <= sum(answered.values())


def test_no_journal_writes_no_journal_and_still_keeps_the_spend_ledger(tmp_path: Path) -> None:
    rows = journal_rows(40)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "--no-journal", expect=1)
        answers = srv.stats()["successes"]
    assert not (out / "journal").exists()
    assert json.loads((out / "spend.json").read_text())["answers"] == answers == 36
    assert_exactly_once(out, rows)


def test_a_journal_that_cannot_be_written_stops_with_exit_74_naming_it(tmp_path: Path) -> None:
    """A real kernel write failure (RLIMIT_FSIZE -> EFBIG) on the journal: exit 74 and one
    line naming the journal; without the limit, the same command settles every row once."""
    rows = journal_rows(400)
    inp, out = input_and_outdir(tmp_path, rows)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    with ZaiServer() as srv:
        args = run_args(inp, out, srv)
        failed = subprocess.run(
            [ZBATCH, *args],
            env=zbatch_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=small_files,
        )
        assert failed.returncode == 74, failed.stderr
        message = failed.stderr.strip().splitlines()[-1]
        assert "could not write the answer journal" in message, message
        assert "File too large" in message and "run the same command" in message
        assert "Traceback" not in failed.stderr

        run_against(srv, "-i", str(inp), "-o", str(out), expect=1)
    assert_exactly_once(out, rows)
