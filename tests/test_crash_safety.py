"""Crash safety and cron readiness, through the installed ``zbatch`` script on loopback.

Signals, kill -9 at random moments and at fixed points of the commit protocol, disk errors,
the OUTDIR lock, output off a terminal, nightly incremental runs, the API key and bad input.
The invariant checked after every stop: readers see only whole Parquet files, results hold
each id at most once, and the same command then finishes with every id settled exactly once.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import (
    input_and_outdir,
    outcome_ids,
    prompt_rows,
    read_table,
    run_args,
    run_zbatch,
    start_zbatch,
    stop_process,
    wait_for,
    write_jsonl,
    zbatch_env,
)
from helpers import run_wrapped, summary
from zai_server import ZaiServer, answer_for

PART_NAME = re.compile(r"^part-.+\.parquet$")

CRASH_POINTS = [
    "write",
    "before_fsync",
    "before_link",
    "after_link",
    "before_dirsync",
    "after_dirsync",
]


def kill_hard(proc: subprocess.Popen[str]) -> None:
    """SIGKILL (if still running) and reap, closing the pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


@contextmanager
def running(args: list[str], *, until: Callable[[], bool]) -> Iterator[subprocess.Popen[str]]:
    """zbatch ARGS in the background, handed over once ``until()`` holds; killed and reaped on
    the way out if it is still running."""
    proc = start_zbatch(*args)
    try:
        wait_for(until, timeout=60)
        yield proc
    finally:
        kill_hard(proc)


def visible_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows a pyarrow.dataset reader of the folder gets now (none when no part is in it:
    a compaction between removing the old parts and moving the merged one in)."""
    if not folder.is_dir():
        return []
    dataset = ds.dataset(folder, format="parquet")
    assert not [f for f in dataset.files if Path(f).name.startswith(".")]
    return dataset.to_table().to_pylist() if dataset.files else []


def assert_whole_files(outdir: Path) -> None:
    """Only whole Parquet parts under final names; temp and staged files are hidden and
    unread; results hold each id at most once."""
    for name in ("results", "errors"):
        folder = outdir / name
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith("."):
                assert path.name.endswith(".tmp") or path.name.startswith(".compact"), path
                continue
            assert PART_NAME.match(path.name), f"unexpected visible file {path}"
            pq.read_table(path)  # every visible file is a complete, readable Parquet file
    results = [row["id"] for row in visible_rows(outdir / "results")]
    assert len(results) == len(set(results)), "an id is in results twice"


def latest_errors(outdir: Path) -> dict[str, tuple[str, bool]]:
    """id -> (error_type, retryable) of its latest error row (the error log is append-only)."""
    folder = outdir / "errors"
    if not any(folder.glob("part-*.parquet")):
        return {}
    latest: dict[str, tuple[str, bool]] = {}
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path, columns=["id", "error_type", "retryable"])
        for row in table.to_pylist():
            latest[row["id"]] = (row["error_type"], row["retryable"])
    return latest


def assert_each_id_once(
    outdir: Path, rows: list[dict[str, Any]]
) -> tuple[set[str], dict[str, tuple[str, bool]]]:
    """Every input id is settled exactly once: in results, or else by its one error row;
    each result holds the answer to its own prompt."""
    assert_whole_files(outdir)
    results = read_table(outdir / "results")
    ids = results.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    errors = latest_errors(outdir)
    expected = {r["id"] for r in rows}
    assert set(ids) | set(errors) == expected
    assert not {i for i in ids if i in errors and not errors[i][1]}, "id in results and failed"
    _, error_ids = outcome_ids(outdir)
    assert len(error_ids) == len(set(error_ids)), "an id was logged as an error twice"
    prompts = {r["id"]: r["prompt"] for r in rows}
    for row in results.select(["id", "content"]).to_pylist():
        messages = [{"role": "user", "content": prompts[row["id"]]}]
        assert row["content"] == answer_for(messages), row["id"]
    return set(ids), errors


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Aborted!" not in proc.stderr, proc.stderr


def filtered_rows(count: int, *, every: int = 13) -> list[dict[str, Any]]:
    """Rows of which every ``every``-th is refused by the content filter (a final error)."""
    rows = prompt_rows(count)
    for index, row in enumerate(rows):
        if index % every == 5:
            row["prompt"] += " FAIL=1301*"
    return rows


# --- 1. SIGINT / SIGTERM ---------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_commits_every_paid_answer_and_rerun_finishes(
    tmp_path: Path, sig: int, code: int
) -> None:
    """SIGINT/SIGTERM mid-run exits 130/143 after in-flight requests finish in the grace period;
    every answer the server sent is committed (none lost) and a rerun sends only the rest."""
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.2) as srv:
        args = run_args(inp, out, srv, "-c", "8", "--part-seconds", "3600", "--grace", "30")
        with running(args, until=lambda: srv.stats()["successes"] >= 16) as proc:
            assert not list((out / "results").glob("*.parquet")), "committed before the signal"
            _, err = stop_process(proc, sig)
        assert proc.returncode == code, err
        assert f"interrupted by {signal.Signals(sig).name}" in err
        assert "run the same command" in err
        stats = srv.stats()
        committed, _ = outcome_ids(out)
        assert stats["successes"] == len(committed) > 0  # nothing paid for was lost
        assert stats["requests"] == stats["successes"]  # in-flight requests got their answers
        assert stats["abandoned"] == 0
        assert_whole_files(out)
        first = summary(out)
        assert first["exit_code"] == code and first["outcome"].startswith("stopped: interrupted")
        assert first["rows"]["ok"] == len(committed)

        srv.configure(latency=0.0)
        srv.reset_stats()
        again = run_zbatch(*args)
        assert again.returncode == 0, again.stderr
        assert srv.stats()["requests"] == len(rows) - len(committed)
        sent_again = set(srv.stats()["answered_prompts"])
        assert not sent_again & {r["prompt"] for r in rows if r["id"] in set(committed)}
        assert_each_id_once(out, rows)
        assert summary(out)["rows"]["skipped_already_done"] == len(committed)


def test_grace_period_cancels_requests_that_outlast_it(tmp_path: Path) -> None:
    """After SIGTERM, requests still running when the grace period ends are abandoned: the run
    exits 143 soon after the grace, not after the slow answers, and a rerun finishes them."""
    rows = prompt_rows(40)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=30) as srv:
        args = run_args(inp, out, srv, "-c", "4", "--grace", "0.5", "--part-seconds", "3600")
        with running(args, until=lambda: srv.stats()["inflight"] >= 4) as proc:
            _, err = stop_process(proc, signal.SIGTERM)
        assert proc.returncode == 143, err
        # It did not wait for the 30 s answers: had it waited, they would be committed.
        assert outcome_ids(out) == ([], [])  # nothing completed, nothing invented
        srv.configure(latency=0.0)
        again = run_zbatch(*args)
        assert again.returncode == 0, again.stderr
        assert_each_id_once(out, rows)


def test_second_signal_exits_at_once_and_committed_parts_stay_valid(tmp_path: Path) -> None:
    """A second SIGTERM during the grace period exits 143 at once, without waiting for the
    in-flight answers; parts committed earlier stay readable and the rerun completes."""
    rows = prompt_rows(200)
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out"
    with ZaiServer() as srv:
        args = run_args(inp, out, srv, "-c", "8", "--grace", "60", "--part-seconds", "3600")
        write_jsonl(inp, rows[:40])
        first = run_zbatch(*args)
        assert first.returncode == 0, first.stderr
        write_jsonl(inp, rows)
        srv.configure(latency=30.0)
        with running(args, until=lambda: srv.stats()["inflight"] >= 8) as proc:
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "stopping: interrupted" in (out / "run.log").read_text(), timeout=30)
            _, err = stop_process(proc, signal.SIGTERM)
        assert proc.returncode == 143, err
        # At once: within its 60 s grace the first signal would have waited for the 30 s
        # answers and committed them; only the first run's 40 rows are there.
        assert "second signal" in (out / "run.log").read_text()
        results, _ = outcome_ids(out)
        assert sorted(results) == sorted(r["id"] for r in rows[:40])
        assert_whole_files(out)

        srv.configure(latency=0.0)
        again = run_zbatch(*args)
        assert again.returncode == 0, again.stderr
        assert_each_id_once(out, rows)


# --- 2. kill -9 --------------------------------------------------------------------------------


def test_kill_9_at_random_moments_never_loses_or_doubles_an_id(tmp_path: Path) -> None:
    """Seeded kill -9 at random moments over many restarts — every other one during start-up
    or at any time, the rest while requests and commits are under way: after each kill readers
    see only whole files, no committed id disappears and none appears twice; the last run
    settles every input id exactly once, including the content-filtered ones."""
    rng = random.Random(20240917)
    rows = filtered_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    kills = finished = 0
    committed_before: set[str] = set()
    with ZaiServer(latency=0.2) as srv:
        args = run_args(
            inp, out, srv, "-c", "4", "--part-rows", "10", "--part-seconds", "0.2", "--grace", "1"
        )
        for attempt in range(24):  # a count, not a deadline: a loaded machine runs them all
            answered = srv.stats()["successes"]
            proc = start_zbatch(*args)
            try:
                if attempt % 2:  # let it reach the answering/committing phase first
                    wait_for(
                        lambda p=proc, n=answered: (
                            srv.stats()["successes"] > n or p.poll() is not None
                        ),
                        timeout=30,
                    )
                    time.sleep(rng.uniform(0.0, 0.8))
                else:
                    time.sleep(rng.uniform(0.05, 1.2))
                if proc.poll() is None:
                    proc.kill()
                    kills += 1
                else:
                    finished += 1
            finally:
                kill_hard(proc)
            assert_whole_files(out)
            results, _ = outcome_ids(out)
            assert committed_before <= set(results), "a committed result disappeared"
            committed_before = set(results)
        assert (kills, finished) == (24, 0)  # each run was killed, none had finished
        assert len(committed_before) >= 10
        srv.configure(latency=0.0)
        last = run_zbatch(*args)
        assert last.returncode == 1, last.stderr  # the content-filtered rows failed for good
        _, errors = assert_each_id_once(out, rows)
        filtered = {r["id"] for r in rows if "FAIL=1301" in r["prompt"]}
        assert set(errors) == filtered
        assert {kind for kind, _ in errors.values()} == {"content_filter"}


@pytest.mark.parametrize("nth", [1, 3])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_each_commit_step_leaves_whole_files_and_resumes(
    tmp_path: Path, point: str, nth: int
) -> None:
    """A crash (os._exit) at each step of the Nth part commit — mid-write, before the fsync,
    before / after the create-only link to the part's name, before / after the directory
    fsync — leaves readers only whole files, and the rerun settles each id exactly once
    without re-sending committed rows."""
    rows = filtered_rows(120, every=9)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        # The part commit alone: with the answer journal (the default) the rerun would also
        # replay the answers the crash cut off (tests/test_unattended_journal.py).
        args = run_args(
            inp, out, srv, "-c", "4", "--part-rows", "10", "--part-seconds", "30", "--no-journal"
        )
        crashed = run_wrapped({"crash": point, "nth": nth}, *args)
        assert crashed.returncode == 9, crashed.stderr
        assert_whole_files(out)
        committed, failed = outcome_ids(out)
        parts = list((out / "results").glob("part-*.parquet"))
        parts += list((out / "errors").glob("part-*.parquet"))
        linked = point in ("after_link", "before_dirsync", "after_dirsync")
        assert len(parts) == (nth if linked else nth - 1)

        srv.reset_stats()
        again = run_zbatch(*args)
        # Exit 1 when this run meets a content-filtered row; the crashed run may have
        # committed all of them already (its error part can go before its second result part).
        unsent = [r for r in rows if r["id"] not in {*committed, *failed}]
        meets_a_filtered_row = any("FAIL=1301" in r["prompt"] for r in unsent)
        assert again.returncode == (1 if meets_a_filtered_row else 0), again.stderr
        assert_each_id_once(out, rows)
        # Only the rows the crash left unsettled are sent again, each once.
        answered = Counter(srv.stats()["answered_prompts"])
        assert answered == Counter(r["prompt"] for r in unsent if "FAIL=" not in r["prompt"])


# A crash at each step of `zbatch compact` on results/ (the first table it merges); "file" is
# the name the step concerns (tests/faults.py). The staged part is hidden, ".compact-<name>".
# Each with the parts a reader of results/ then finds: all the old ones, all but the first,
# none, or the merged one alone.
COMPACT_CRASHES = {
    "journal-written": ({"crash": "after:write_bytes", "file": ".compact-journal.json"}, "old"),
    "staging-half-written": ({"crash": "write", "file": "..compact-*.tmp"}, "old"),
    "staged": ({"crash": "after:create", "file": ".compact-*"}, "old"),
    "one-old-part-removed": ({"crash": "after:delete", "file": "part-*"}, "old but one"),
    "old-parts-removed": ({"crash": "before:move", "file": ".compact-*"}, "none"),
    "linked-not-unlinked": ({"crash": "after_link", "file": ".compact-*"}, "merged"),
    "moved-journal-left": ({"crash": "after:move", "file": ".compact-*"}, "merged"),
}


class PollingReader(threading.Thread):
    """Reads results/ with pyarrow.dataset over and over, as a user's job would while zbatch
    works, and notes every read that holds an id twice."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.done = threading.Event()
        self.reads = self.vanished = 0
        self.doubled: list[list[str]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                dataset = ds.dataset(self.folder, format="parquet")
                # No part at all (the old ones gone, the merged one not yet in): no ids.
                table = dataset.to_table(columns=["id"]) if dataset.files else None
            except FileNotFoundError:
                self.vanished += 1  # a part went between listing and reading: no result
                continue
            except Exception as exc:  # anything else a reader meets is a failure to report
                self.failures.append(repr(exc))
                continue
            self.reads += 1
            ids = [] if table is None else table.column("id").to_pylist()
            twice = [i for i, n in Counter(ids).items() if n > 1]
            if twice:
                self.doubled.append(twice)
            time.sleep(0.002)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=60)
        assert not self.is_alive()


def part_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("part-*.parquet"))


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """An OUTDIR after three nightly runs on a growing input: three parts or more in each
    table (built once; each test compacts a copy)."""
    base = tmp_path_factory.mktemp("nights")
    rows = filtered_rows(90, every=7)
    inp, out = base / "in.jsonl", base / "out"
    with ZaiServer() as srv:
        for size in (30, 60, 90):
            write_jsonl(inp, rows[:size])
            night = run_zbatch(*run_args(inp, out, srv, "-c", "4"))
            assert night.returncode == 1, night.stderr  # the content-filtered rows
    assert len(part_names(out / "results")) >= 3 and len(part_names(out / "errors")) >= 3
    return out, rows


@pytest.mark.parametrize("step", list(COMPACT_CRASHES))
def test_a_compaction_killed_at_each_step_never_shows_an_id_twice(
    tmp_path: Path, step: str, three_nights: tuple[Path, list[dict[str, Any]]]
) -> None:
    """`zbatch compact` killed at each step of merging results/ — journal written, merged part
    half-staged, staged, old parts partly / wholly removed, merged part linked, moved — never
    lets a pyarrow.dataset reader of results/ (polling throughout, and after the crash) see an
    id twice (issue 11 item 10). The next run finishes or forgets the compaction without
    sending anything; a compaction after that leaves one part per table with every row once."""
    template, rows = three_nights
    out = tmp_path / "out"
    shutil.copytree(template, out)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    before = read_table(out / "results").to_pylist()
    parts_before = part_names(out / "results")
    with ZaiServer() as srv:
        args = run_args(inp, out, srv, "-c", "4")
        reader = PollingReader(out / "results")
        reader.start()
        try:
            fault, visible = COMPACT_CRASHES[step]
            crashed = run_wrapped(fault, "compact", str(out))
            assert crashed.returncode == 9, crashed.stdout + crashed.stderr
            found = part_names(out / "results")
            if visible == "merged":
                assert len(found) == 1 and found[0] not in parts_before[:-1]
                assert visible_rows(out / "results") == before
            else:
                skip = {"old": 0, "old but one": 1, "none": len(parts_before)}[visible]
                assert found == parts_before[skip:]
            assert_whole_files(out)  # includes: each id at most once in results
            assert all(row in before for row in visible_rows(out / "results"))
            staged = step not in ("journal-written", "staging-half-written")

            srv.reset_stats()
            again = run_zbatch(*args)  # the next command finishes (or forgets) the compaction
            assert again.returncode == 0, again.stderr
            assert srv.stats()["requests"] == 0
            if staged:  # finished: the merged part alone
                assert len(part_names(out / "results")) == 1
            else:  # forgotten: the old parts, untouched
                assert part_names(out / "results") == parts_before
            assert read_table(out / "results").to_pylist() == before

            compacted = run_zbatch("compact", str(out))
            assert compacted.returncode == 0, compacted.stderr
        finally:
            reader.stop()
    assert len(part_names(out / "results")) == len(part_names(out / "errors")) == 1
    assert read_table(out / "results").to_pylist() == before
    assert_each_id_once(out, rows)
    assert reader.reads > 0 and not reader.failures, reader.failures
    assert not reader.doubled, f"a reader saw ids twice: {reader.doubled[:3]}"


# --- 3. disk full / write errors -------------------------------------------------------------


@pytest.mark.parametrize(("err", "advice"), [("ENOSPC", "free space"), ("EIO", "fix the disk")])
def test_write_error_stops_with_exit_74_and_same_command_resumes(
    tmp_path: Path, err: str, advice: str
) -> None:
    """A part file that cannot be written (disk full, I/O error) stops the run with exit 74 and
    a message naming the file, what to do about that error (free space / fix the disk) and to
    rerun; committed parts stay intact and, once the fault is gone, the same command completes
    with each id exactly once."""
    rows = prompt_rows(200)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.005) as srv:
        args = run_args(inp, out, srv, "-c", "8", "--part-rows", "20")
        failed = run_wrapped({"errno": err, "nth": 3}, *args)
        assert failed.returncode == 74, failed.stderr
        assert_no_traceback(failed)
        message = failed.stderr.strip().splitlines()[-1]
        assert message.startswith("Error: could not write ")
        assert re.search(r"/(results|errors)/part-\S+\.parquet", message), message
        assert os.strerror(getattr(__import__("errno"), err)) in message
        assert f"Parts committed earlier are intact; {advice}, then run the same command" in message
        assert_whole_files(out)
        assert len(list((out / "results").glob("part-*.parquet"))) == 2  # before the fault
        assert summary(out)["exit_code"] == 74

        again = run_zbatch(*args)
        assert again.returncode == 0, again.stderr
        assert_each_id_once(out, rows)


def test_file_size_limit_efbig_is_a_clear_store_error(tmp_path: Path) -> None:
    """A real kernel write failure (RLIMIT_FSIZE -> EFBIG) in the final commit exits 74 naming
    the part file; summary.json records the stop; lifting the limit, the same command resumes."""
    rows = prompt_rows(500)
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out"
    with ZaiServer() as srv:
        # --no-journal: the limit is to hit the final part commit, not the journal's appends.
        args = run_args(inp, out, srv, "-c", "8", "--no-journal")
        write_jsonl(inp, rows[:30])
        first = run_zbatch(*args)
        assert first.returncode == 0, first.stderr
        write_jsonl(inp, rows)
        failed = run_wrapped({"fsize": 12_000}, *args)
        assert failed.returncode == 74, failed.stderr
        assert_no_traceback(failed)
        assert "could not write" in failed.stderr and "File too large" in failed.stderr
        assert "free space, then run the same command" in failed.stderr
        assert sorted(outcome_ids(out)[0]) == [r["id"] for r in rows[:30]]
        assert_whole_files(out)
        stopped = summary(out)
        assert stopped["exit_code"] == 74
        assert stopped["outcome"].startswith("stopped: could not write"), stopped["outcome"]
        # The counts are of saved rows: the 470 answers that could not be written are not "ok".
        assert stopped["rows"]["ok"] == 0
        assert (
            "470 paid answers wait to be saved, of 470 finished rows not saved; "
            "the next run sends them again" in (stopped["outcome"])
        )

        again = run_zbatch(*args)
        assert again.returncode == 0, again.stderr
        assert_each_id_once(out, rows)


# --- 4. the lock -------------------------------------------------------------------------------


def test_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path: Path) -> None:
    """While a run is active, a second run on the same OUTDIR exits 75 at once naming the
    holder's pid, host and start time, sending nothing; after kill -9 of the holder a new run
    is not blocked; .lock is never removed."""
    rows = prompt_rows(30)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=30) as srv:
        args = run_args(inp, out, srv, "-c", "2")
        with running(args, until=lambda: srv.stats()["inflight"] >= 2) as holder:
            before = srv.stats()["requests"]
            second = run_zbatch(*args, timeout=60)
            assert second.returncode == 75, second.stderr
            # It did not wait for the holder: the holder's requests take 30 s and are still
            # in flight, and it is still running.
            assert holder.poll() is None and srv.stats()["inflight"] >= 2
            assert f"pid {holder.pid}" in second.stderr
            assert socket.gethostname() in second.stderr
            assert re.search(r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", second.stderr)
            assert_no_traceback(second)
            assert srv.stats()["requests"] == before
        assert holder.returncode == -signal.SIGKILL
        assert (out / ".lock").exists()

        srv.configure(latency=0.0)
        third = run_zbatch(*args, timeout=120)  # not blocked by the dead holder's lock
        assert third.returncode == 0, third.stderr
        assert (out / ".lock").exists()
        assert_each_id_once(out, rows)


def test_a_symlink_at_the_lock_path_stops_the_run_with_exit_74(tmp_path: Path) -> None:
    """A symbolic link planted at OUTDIR/.lock is not followed: the run exits 74 with one
    'Error:' line naming it, before sending anything, and the file it points to is unchanged."""
    inp, out = input_and_outdir(tmp_path, prompt_rows(5))
    out.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("someone else's file\n")
    (out / ".lock").symlink_to(target)
    with ZaiServer() as srv:
        proc = run_zbatch(*run_args(inp, out, srv))
        assert srv.stats()["requests"] == 0
    assert proc.returncode == 74, proc.stderr
    assert_no_traceback(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert str(out / ".lock") in lines[0] and "symbolic link" in lines[0]
    assert target.read_text() == "someone else's file\n"
    assert (out / ".lock").is_symlink()


# --- 5. cron output ----------------------------------------------------------------------------


def test_off_a_terminal_progress_is_plain_lines_every_log_every_seconds(tmp_path: Path) -> None:
    """With stderr a pipe there are no bar redraws ('\\r'), progress lines come at most every
    --log-every seconds, and run.log has start and end lines but no prompt text."""
    rows = prompt_rows(60)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.1) as srv:
        proc = run_zbatch(*run_args(inp, out, srv, "-c", "2", "--log-every", "0.5"))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    stamps = [
        time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
        for line in proc.stderr.splitlines()
        if " INFO progress " in line
    ]
    # The run takes at least 60 * 0.1 / 2 = 3 s of server latency (load only lengthens it):
    # lines come during it, and never more often than --log-every (load only widens gaps).
    assert len(stamps) >= 3, proc.stderr  # two ticks and the close, at the least
    gaps = [b - a for a, b in itertools.pairwise(stamps[:-1])]  # the last is the close
    assert min(gaps) >= 0.45, f"progress lines {gaps} s apart with --log-every 0.5"
    log_text = (out / "run.log").read_text()
    assert " INFO start: " in log_text and " INFO end: finished" in log_text
    assert "Question number" not in log_text and "Question number" not in proc.stderr
    assert "rows ok" in proc.stdout  # the summary table


def test_quiet_prints_nothing_on_success_and_only_errors_on_a_stop(tmp_path: Path) -> None:
    """--quiet: a clean run prints nothing at all; a run stopped by a fatal API error prints
    only 'Error:' lines on stderr and nothing on stdout."""
    rows = prompt_rows(40)
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out"
    with ZaiServer(latency=0.01) as srv:
        args = run_args(inp, out, srv, "-c", "4", "--quiet", "--log-every", "0.1")
        write_jsonl(inp, rows[:20])
        clean = run_zbatch(*args)
        assert clean.returncode == 0
        assert (clean.stdout, clean.stderr) == ("", "")
        write_jsonl(inp, rows)
        srv.configure(fatal_code="1113")
        stopped = run_zbatch(*args)
    assert stopped.returncode == 3
    assert stopped.stdout == ""
    lines = stopped.stderr.splitlines()
    assert lines and all(line.startswith("Error: ") for line in lines), stopped.stderr
    assert "top up" in stopped.stderr


def test_summary_json_is_rewritten_by_every_run(tmp_path: Path) -> None:
    """summary.json describes the last run: a run with nothing left to do replaces the first
    run's figures with its own (0 ok, all skipped, no requests)."""
    rows = prompt_rows(25)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        args = run_args(inp, out, srv, "--quiet")
        assert run_zbatch(*args).returncode == 0
        first_text = (out / "summary.json").read_text()
        assert run_zbatch(*args).returncode == 0
        second_text = (out / "summary.json").read_text()
    assert first_text != second_text
    first, second = json.loads(first_text), json.loads(second_text)
    assert (first["rows"]["ok"], first["requests"]) == (25, 25)
    assert (second["rows"]["ok"], second["requests"]) == (0, 0)
    assert second["rows"]["skipped_already_done"] == 25
    assert second["outcome"] == "finished" and second["exit_code"] == 0


# --- 6. nightly incremental runs -------------------------------------------------------------


def test_three_nights_on_a_growing_input_send_only_new_ids(tmp_path: Path) -> None:
    """Night after night on an input growing 100 -> 150 -> 220 rows, each run sends only the
    ids it has not seen, and results hold each id once."""
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out"
    everything = prompt_rows(220)
    with ZaiServer() as srv:
        args = run_args(inp, out, srv, "--quiet", "-c", "8")
        done = 0
        for size in (100, 150, 220):
            write_jsonl(inp, everything[:size])
            srv.reset_stats()
            night = run_zbatch(*args)
            assert night.returncode == 0, night.stderr
            stats = srv.stats()
            assert stats["requests"] == size - done
            new = {r["prompt"] for r in everything[done:size]}
            assert Counter(stats["answered_prompts"]) == Counter(new)
            assert_each_id_once(out, everything[:size])
            assert summary(out)["rows"]["skipped_already_done"] == done
            done = size


# --- 7. secrets --------------------------------------------------------------------------------

SECRET = "zk-SECRET-7f3a9c"


def test_api_key_appears_in_no_output_file_or_stream(tmp_path: Path) -> None:
    """A job with retries, transient and content-filter failures, a duplicate id with an
    800-character id, then a fatal 401: the key appears in no byte of any file under OUTDIR
    nor in stdout/stderr, and stored error messages are at most 500 characters."""
    rows = prompt_rows(30)
    rows[3]["prompt"] += " FAIL=500,500"
    rows[4]["prompt"] += " FAIL=500*"
    rows[5]["prompt"] += " FAIL=1301"
    rows[6]["prompt"] += " FAIL=1302,429"
    long_id = "dup-" + "x" * 800
    rows += [{"id": long_id, "prompt": "first"}, {"id": long_id, "prompt": "second"}]
    inp, out = input_and_outdir(tmp_path, rows)
    job = tmp_path / "job.toml"
    job.write_text(
        "[limits]\nmax_retries = 2\nbackoff_base = 0.05\nbackoff_cap = 0.1\n", encoding="utf-8"
    )
    env = zbatch_env(ZAI_API_KEY=SECRET)
    streams = []
    with ZaiServer(require_key=SECRET) as srv:
        args = [str(job), *run_args(inp, out, srv, "-c", "4", "--part-rows", "5")[1:]]
        first = run_zbatch("run", *args, env=env)
        assert first.returncode == 1, first.stderr
        assert srv.stats()["successes"] >= 25  # the key was sent and accepted
        streams += [first.stdout, first.stderr]

        write_jsonl(inp, [*rows, *prompt_rows(20, prefix="late")])
        srv.configure(require_key="zk-some-other-key")
        fatal = run_zbatch("run", *args, env=env)
        assert fatal.returncode == 3, fatal.stderr
        assert "Authorization" in fatal.stderr or "auth" in fatal.stderr.lower()
        streams += [fatal.stdout, fatal.stderr]
        status = run_zbatch("status", str(out), env=env)
        export = run_zbatch("export", str(out), "-o", str(out / "export.jsonl"), env=env)
        assert status.returncode == 0 and export.returncode == 0, status.stderr + export.stderr
        streams += [status.stdout, status.stderr, export.stdout, export.stderr]

    for text in streams:
        assert SECRET not in text
    checked = 0
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the key is in {path}"
            checked += 1
    assert checked >= 8
    errors = read_table(out / "errors")
    kinds = Counter(errors.column("error_type").to_pylist())
    assert {"server_error", "content_filter", "duplicate_id", "fatal"} <= set(kinds)
    messages = errors.column("message").to_pylist()
    assert max(len(m) for m in messages) <= 500
    assert any(len(m) >= 400 for m in messages)  # the long duplicate-id message, truncated


def test_proxy_credentials_appear_in_no_output_file_or_stream(tmp_path: Path) -> None:
    """HTTPS_PROXY carries a user and password; the proxy (the loopback server) refuses the
    CONNECT, so every row fails with an error that aiohttp words with the proxy's URL. The
    rows are logged as retryable connection failures, and the password is in no file under
    OUTDIR nor in stdout/stderr, as written or percent-decoded."""
    inp, out = input_and_outdir(tmp_path, prompt_rows(3))
    with ZaiServer() as proxy:
        env = zbatch_env(HTTPS_PROXY=f"http://proxy-user:pr0xy%2Fpw@127.0.0.1:{proxy.port}")
        env["NO_PROXY"] = "localhost"
        api = "https://zbatch-proxy-test.invalid/api/paas/v4"
        proc = run_zbatch(
            "run", "-i", str(inp), "-o", str(out), "--base-url", api, "--max-retries", "0",
            env=env,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    errors = read_table(out / "errors").to_pylist()
    assert sorted(e["error_type"] for e in errors) == ["connection"] * 3
    assert all("ProxyError" in e["message"] and "[redacted]" in e["message"] for e in errors)
    for secret in ("pr0xy%2Fpw", "pr0xy/pw"):
        assert secret not in proc.stdout + proc.stderr
        for path in out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"the password is in {path}"


# --- 8. bad input ------------------------------------------------------------------------------


def test_bad_lines_become_error_rows_naming_file_and_line(tmp_path: Path) -> None:
    """Malformed JSON, invalid UTF-8, a 17 MB line and 100,000-deep nesting each become an
    invalid_input error row naming the file and line; the good rows are answered; exit 1."""
    good = prompt_rows(6)
    lines = [json.dumps(r).encode() for r in good[:3]]
    lines += [
        b'{"id": "broken", "prompt": ',
        b'{"id": "latin1", "prompt": "caf\xe9"}',
        b'{"id": "huge", "prompt": "' + b"a" * (17 * 1024 * 1024) + b'"}',
        b"[" * 100_000,
    ]
    lines += [json.dumps(r).encode() for r in good[3:]]
    inp = tmp_path / "bad.jsonl"
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    with ZaiServer() as srv:
        proc = run_zbatch(*run_args(inp, out, srv))
        assert srv.stats()["requests"] == len(good)
    assert proc.returncode == 1, proc.stderr
    assert_no_traceback(proc)
    errors = read_table(out / "errors").to_pylist()
    assert {e["error_type"] for e in errors} == {"invalid_input"}
    by_id = {e["id"]: e["message"] for e in errors}
    assert set(by_id) == {f"?bad.jsonl line {n}" for n in (4, 5, 6, 7)}
    assert "not valid JSON" in by_id["?bad.jsonl line 4"]
    assert "UTF-8" in by_id["?bad.jsonl line 5"]
    assert "longer than 16 MB" in by_id["?bad.jsonl line 6"]
    assert "nested too deeply" in by_id["?bad.jsonl line 7"]
    assert all(m.startswith(i[1:]) for i, m in by_id.items())
    assert sorted(outcome_ids(out)[0]) == [r["id"] for r in good]


def _not_parquet(path: Path) -> str:
    path.write_bytes(b"PAR1 this is not really a parquet file\n")
    return path.name


def _empty(path: Path) -> str:
    path.write_bytes(b"")
    return "empty"


def _no_id_column(path: Path) -> str:
    pq.write_table(pa.table({"key": ["a", "b"], "prompt": ["x", "y"]}), path)
    return "no id column 'id'"


def _not_gzip(path: Path) -> str:
    path.write_bytes(b'{"id": "a", "prompt": "not compressed"}\n')
    return path.name


def _truncated_gzip(path: Path) -> str:
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in prompt_rows(3000)).encode())
    path.write_bytes(data[: len(data) // 2])
    return path.name


def _not_jsonl(path: Path) -> str:
    path.write_text("id,prompt\n1,hello\n2,world\n", encoding="utf-8")
    return "not JSON objects"


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("in.parquet", _not_parquet),
        ("in.jsonl", _empty),
        ("in.parquet", _no_id_column),
        ("in.jsonl.gz", _not_gzip),
        ("in.jsonl.gz", _truncated_gzip),
        ("in.jsonl", _not_jsonl),
    ],
    ids=["not-parquet", "empty", "no-id-column", "not-gzip", "truncated-gzip", "csv-as-jsonl"],
)
def test_unusable_input_file_exits_2_before_sending(tmp_path: Path, name: str, make: Any) -> None:
    """An input file that cannot be used stops the run with exit 2 and one clear 'Error:' line
    naming the problem, before a single request is sent, never with a traceback."""
    inp = tmp_path / name
    expected = make(inp)
    with ZaiServer() as srv:
        proc = run_zbatch(*run_args(inp, tmp_path / "out", srv))
        assert srv.stats()["requests"] == 0
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.startswith("Error: ") and expected in proc.stderr, proc.stderr


def test_parquet_corrupt_in_the_middle_stops_cleanly_naming_the_file(tmp_path: Path) -> None:
    """A Parquet input whose header is fine but a later page is corrupt stops the run with exit
    2 and a clear message naming the file (no traceback), committing every answer received."""
    rows = prompt_rows(3000)
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), inp, row_group_size=500, compression="none")
    data = bytearray(inp.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = random.Random(7).randbytes(2000)
    inp.write_bytes(bytes(data))
    out = tmp_path / "out"
    with ZaiServer() as srv:
        proc = run_zbatch(*run_args(inp, out, srv, "-c", "8", "--part-rows", "200"))
        successes = srv.stats()["successes"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_no_traceback(proc)
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: {inp} cannot be read past its first "), message
    assert "run the same command" in message
    assert_whole_files(out)
    assert len(outcome_ids(out)[0]) == successes  # whatever was answered is kept
    assert summary(out)["exit_code"] == 2
