"""No two live writers ever own one id, and whoever next owns an id replays the journal that
holds it (issue 20, cases 1-3 and 6-8). Real zbatch processes, real SIGKILL and SIGTERM, the
loopback server; the OUTDIR read with pyarrow.dataset while the writers run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from chaos import durable_ids
from conftest import (
    input_and_outdir,
    prompt_rows,
    read_export,
    read_table,
    run_args,
    run_zbatch,
    start_zbatch,
    wait_for,
    zbatch_env,
)
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)
from zai_server import ZaiServer, answer_for

import zbatch
from zbatch.shard import shard_of
from zbatch.store import OutputDir
from zbatch.store.journal import read_frames

FAULTS = Path(__file__).with_name("faults.py")


def kill_hard(proc: subprocess.Popen[str]) -> None:
    """SIGKILL it if it still runs (a failed assertion), and reap it, closing the pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


SLOW = 0.05  # seconds per answer: runs last long enough to overlap


class UniqueWatch:
    """Reads results/ with pyarrow.dataset over and over while writers run; records any
    moment an id is there twice."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.doubles: list[tuple[str, int]] = []
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.check()

    def check(self) -> None:
        folder = self.outdir / "results"
        try:
            ids = ds.dataset(folder, format="parquet").to_table(columns=["id"])["id"]
        except (FileNotFoundError, pa.ArrowInvalid, OSError):
            return  # not made yet, or a part compacted away between listing and reading
        self.looks += 1
        counts = Counter(ids.to_pylist())
        self.doubles += [(row_id, n) for row_id, n in counts.items() if n > 1]

    @contextmanager
    def running(self) -> Iterator[UniqueWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)
            self.check()


def held(outdir: Path, name: str) -> bool:
    return OutputDir(str(outdir)).storage.holder(name) is not None


def durable_prompts(outdir: Path, prompt_of: dict[str, str]) -> set[str]:
    """The prompts whose answers the OUTDIR holds: in results/ parts or in a journal."""
    return {prompt_of[row_id] for row_id in durable_ids(outdir)}


def assert_each_id_once_with_its_answer(outdir: Path, rows: list[dict[str, str]]) -> None:
    table = read_table(outdir / "results")
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    prompt_of = {r["id"]: r["prompt"] for r in rows}
    for row_id, content in zip(table["id"].to_pylist(), table["content"].to_pylist(), strict=True):
        assert content == answer_for([{"role": "user", "content": prompt_of[row_id]}])


def finish(srv: ZaiServer, inp: Path, out: Path) -> None:
    proc = run_zbatch(*run_args(inp, out, srv, "-c", "8", "-q"))
    assert proc.returncode == 0, proc.stderr


# --- case 1 and 2: overlapping writers exclude each other -----------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("0/2", "0/3"), ("0/2", "1/3"), ("1/3", None), (None, "2/5"), ("0/4", "4/8")],
    ids=["split-2-vs-3", "split-2-vs-other-3", "whole-beside-shard", "shard-beside-whole", "4-8"],
)
def test_a_writer_overlapping_a_live_one_is_refused_at_once_with_exit_75(
    tmp_path: Path, first: str | None, second: str | None
) -> None:
    """While one writer runs, a second whose ids overlap (another split with a common id, a
    whole run beside a shard, a shard beside a whole run) exits 75 with one line naming the
    lock and the owner, before sending anything; nobody buys an answer twice and no id is
    ever twice in results/."""
    rows = prompt_rows(400)
    inp, out = input_and_outdir(tmp_path, rows)
    shard = ["--shard", first] if first else []
    with ZaiServer(latency=SLOW) as srv, UniqueWatch(out).running() as watch:
        running = start_zbatch(*run_args(inp, out, srv, "-c", "2", "--part-seconds", "0.2", *shard))
        try:
            lock = ".lock" if first is None else f".lock-{first.replace('/', 'of')}"
            wait_for(lambda: srv.stats()["successes"] >= 5, timeout=60)
            assert held(out, lock)
            second_args = ["--shard", second] if second else []
            refused = run_zbatch(*run_args(inp, out, srv, "-c", "8", *second_args))
            assert refused.returncode == 75, refused.stderr
            line = refused.stderr.strip()
            assert len(line.splitlines()) == 1 and "Traceback" not in line
            assert lock in line and "wait for it to finish" in line
            running.send_signal(signal.SIGTERM)  # stops cleanly: its in-flight answers are kept
            running.communicate(timeout=60)
            assert running.returncode == 143
        finally:
            kill_hard(running)
        srv.configure(latency=0.002)
        finish(srv, inp, out)
        answered = Counter(srv.stats()["answered_prompts"])
    assert watch.doubles == [] and watch.looks > 0
    assert_each_id_once_with_its_answer(out, rows)
    assert max(answered.values()) == 1


def test_disjoint_shards_of_different_splits_run_side_by_side(tmp_path: Path) -> None:
    """0/2 and 1/4 own no common id (1 is odd, 0 is even, modulo gcd 2): both run at once,
    each exits 0, and every id they own is in results/ once with its own answer."""
    rows = prompt_rows(200)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=0.01) as srv, UniqueWatch(out).running() as watch:
        procs = [
            start_zbatch(*run_args(inp, out, srv, "-c", "4", "--shard", s, "-q"))
            for s in ("0/2", "1/4")
        ]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert max(Counter(srv.stats()["answered_prompts"]).values()) == 1
        finish(srv, inp, out)
        answered = Counter(srv.stats()["answered_prompts"])
    assert watch.doubles == []
    assert max(answered.values()) == 1
    assert_each_id_once_with_its_answer(out, rows)


def test_many_writers_of_random_splits_at_once_never_double_an_id(tmp_path: Path) -> None:
    """The attack of case 1: --shard 0/2, 0/3, 1/3, 1/2, 2/3 and a whole run started together.
    Each exits 0 or 75; at no moment is an id twice in results/, and no answer is bought twice
    (nothing was killed, so nothing was in flight to lose)."""
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    splits: list[list[str]] = [["--shard", s] for s in ("0/2", "0/3", "1/3", "1/2", "2/3")]
    with ZaiServer(latency=0.01) as srv, UniqueWatch(out).running() as watch:
        procs = [start_zbatch(*run_args(inp, out, srv, "-c", "4", "-q", *s)) for s in [*splits, []]]
        codes = []
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, 75), err
            codes.append(proc.returncode)
        finish(srv, inp, out)
        answered = Counter(srv.stats()["answered_prompts"])
    assert watch.doubles == []
    assert max(answered.values()) == 1
    assert_each_id_once_with_its_answer(out, rows)
    assert 0 in codes


@pytest.mark.parametrize(("held_share", "refused"), [((0, 2), "0/3")])
def test_overlapping_writers_exclude_each_other_on_object_storage(
    s3: S3, tmp_path: Path, held_share: tuple[int, int] | None, refused: str
) -> None:
    """The same rule on s3:// (moto on loopback), where the locks are leases: with shard 0/2
    (or a whole run) holding its lease, shard 0/3 (or 1/4) is refused with exit 75 naming the
    lease, and sends nothing; once the lease is released the same command runs."""
    rows = prompt_rows(30)
    inp, _ = input_and_outdir(tmp_path, rows)
    outdir = s3.url("out")
    env = zbatch_env(**s3.env)
    with ZaiServer() as srv:
        with OutputDir(outdir).locked(held_share):
            proc = run_zbatch(*run_args(inp, outdir, srv, "--shard", refused), env=env)
            assert proc.returncode == 75, proc.stderr
            name = ".lock" if held_share is None else ".lock-0of2"
            assert f"{outdir}/{name}" in proc.stderr and "wait for it to finish" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
            assert srv.stats()["requests"] == 0
        proc = run_zbatch(*run_args(inp, outdir, srv, "--shard", refused), env=env)
        assert proc.returncode == 0, proc.stderr
        assert srv.stats()["requests"] > 0


# --- case 3: the journal is replayed by whoever next owns its ids ----------------------------


def killed_with_a_journal(srv: ZaiServer, inp: Path, out: Path, *shard: str) -> None:
    """A run with parts every 600 s, killed -9 once it holds answers in its journal."""
    proc = start_zbatch(*run_args(inp, out, srv, "-c", "4", "--part-seconds", "600", *shard))
    try:
        wait_for(lambda: srv.stats()["successes"] >= 40, timeout=60)
    finally:
        kill_hard(proc)
    wait_for(lambda: srv.stats()["inflight"] == 0, timeout=60)


@pytest.mark.parametrize(
    ("killed", "resumed"),
    [
        ([], [["--shard", "0/2"], ["--shard", "1/2"]]),
        (["--shard", "0/2"], [[]]),
        (["--shard", "1/3"], [["--shard", "0/2"], ["--shard", "1/2"]]),
    ],
    ids=["whole-to-shards", "shard-to-whole", "3-to-2"],
)
def test_a_killed_runs_journal_is_replayed_by_the_next_owner_of_its_ids(
    tmp_path: Path, killed: list[str], resumed: list[list[str]]
) -> None:
    """Killed -9 with answers only in its journal, a run of one split is resumed by runs of
    another: no answer the journal held is bought again, every id ends once in results/ with
    its own answer, and the journal is gone once all its rows are in parts."""
    rows = prompt_rows(300)
    prompt_of = {r["id"]: r["prompt"] for r in rows}
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=SLOW) as srv:
        killed_with_a_journal(srv, inp, out, *killed)
        held_answers = durable_prompts(out, prompt_of)
        assert len(held_answers) >= 30
        before = Counter(srv.stats()["answered_prompts"])
        srv.configure(latency=0.002)
        for args in resumed:
            proc = run_zbatch(*run_args(inp, out, srv, "-c", "8", "-q", *args))
            assert proc.returncode == 0, proc.stderr
        finish(srv, inp, out)
        after = Counter(srv.stats()["answered_prompts"])
    bought_again = {p for p, n in after.items() if n > 1}
    assert not bought_again & held_answers
    # In flight at the kill (-c 4), and the answers of the last group-commit window (~50 ms
    # at c / latency = 80 answers/s, doubled for a loaded machine): never one the OUTDIR held.
    assert len(bought_again) <= 4 + 8
    assert sum(before.values()) >= len(held_answers)
    assert_each_id_once_with_its_answer(out, rows)
    assert not list((out / "journal").glob("*.journal"))


def journal_only_ids(out: Path) -> set[str]:
    """Ids whose result the journal holds and the parts do not."""
    journaled: set[str] = set()
    for segment in (out / "journal").glob("*.journal"):
        for kind, payload in read_frames(segment):
            if kind == 1:  # results
                journaled |= set(pa.ipc.open_stream(payload).read_all().column("id").to_pylist())
    committed = set(read_table(out / "results").column("id").to_pylist())
    return journaled - committed


def test_status_counts_only_the_journaled_rows_no_part_holds(tmp_path: Path) -> None:
    """After a whole run is killed, status's "not yet committed" is the journal's rows; after
    shard 0/2 replays its ids (the segment stays: shard 1's ids wait in it), only shard 1's."""
    rows = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=SLOW) as srv:
        killed_with_a_journal(srv, inp, out)
        waiting = journal_only_ids(out)
        assert len(waiting) >= 30
        assert zbatch.status(out).uncommitted == len(waiting)
        srv.configure(latency=0.002)
        proc = run_zbatch(*run_args(inp, out, srv, "-q", "--shard", "0/2"))
        assert proc.returncode == 0, proc.stderr
    assert list((out / "journal").glob("*.journal")), "shard 1's ids still wait in it"
    in_shard_1 = {row_id for row_id in waiting if shard_of(row_id, 2) == 1}
    assert in_shard_1 and journal_only_ids(out) == in_shard_1
    assert zbatch.status(out).uncommitted == len(in_shard_1)


# --- case 6: readers after an interrupted compaction -----------------------------------------


def test_readers_see_every_row_after_a_crashed_compact(tmp_path: Path) -> None:
    """`zbatch compact` killed right after it deleted the first old part (its merged part
    staged): status, export and read_results still see every committed row, on the spot and
    without writing; the next compact finishes it."""
    rows = prompt_rows(120)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        for start in (0, 40, 80):
            proc = run_zbatch(*run_args(inp, out, srv, "-q", "--limit", "40"))
            assert proc.returncode == 0, proc.stderr
            del start
    assert len(list((out / "results").glob("part-*.parquet"))) == 3
    env = zbatch_env(ZB_FAULT=json.dumps({"crash": "after:delete", "file": "part-*.parquet"}))
    crashed = subprocess.run(
        [sys.executable, str(FAULTS), "compact", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr
    assert len(list((out / "results").glob("part-*.parquet"))) == 2  # one old part gone
    assert list((out / "results").glob(".compact-*"))

    status = run_zbatch("status", str(out), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["done"] == 120
    exported = run_zbatch("export", str(out), "-o", str(tmp_path / "all.jsonl"))
    assert exported.returncode == 0, exported.stderr
    assert sorted(r["id"] for r in read_export(tmp_path / "all.jsonl")) == sorted(
        r["id"] for r in rows
    )
    assert sorted(zbatch.read_results(str(out)).column("id").to_pylist()) == sorted(
        r["id"] for r in rows
    )
    assert run_zbatch("compact", str(out)).returncode == 0
    assert len(list((out / "results").glob("part-*.parquet"))) == 1
    assert_each_id_once_with_its_answer(out, rows)


# --- case 7: errors and signals at start -----------------------------------------------------


def test_a_file_where_the_journal_folder_belongs_is_one_line_and_exit_74(tmp_path: Path) -> None:
    rows = prompt_rows(10)
    inp, out = input_and_outdir(tmp_path, rows)
    out.mkdir()
    (out / "journal").write_text("not a folder")
    with ZaiServer() as srv:
        proc = run_zbatch(*run_args(inp, out, srv, "-q"))
        assert srv.stats()["requests"] == 0
    assert proc.returncode == 74, proc.stderr
    assert proc.stderr.strip() == (
        f"Error: {out / 'journal'} is a file, where zbatch keeps its answer journal: move it "
        "away, then run the same command"
    )


def test_no_room_for_the_lock_file_is_one_line_and_exit_74(tmp_path: Path) -> None:
    """A disk that takes not one byte more (RLIMIT_FSIZE 0: a real EFBIG from the kernel at
    the lock file's first write): exit 74, one line, no traceback, nothing sent."""
    rows = prompt_rows(10)
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        proc = subprocess.run(
            [sys.executable, str(FAULTS), *run_args(inp, out, srv, "-q")],
            env=zbatch_env(ZB_FAULT=json.dumps({"fsize": 0})),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert srv.stats()["requests"] == 0
    assert proc.returncode == 74, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert ".lock" in proc.stderr and "free space" in proc.stderr


def test_sigterm_before_the_dispatcher_starts_exits_143(tmp_path: Path) -> None:
    """The input is a FIFO nobody writes yet, so the run is held in its start-up (after the
    lock, while reading the input): a SIGTERM then is exit 143 and one line, not death by the
    signal's default action."""
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    with ZaiServer() as srv:
        proc = start_zbatch(*run_args(fifo, out, srv, "-q"))
        try:
            wait_for(lambda: (out / ".lock").exists(), timeout=60)  # tried first, then the input
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # blocked on the FIFO for good: do not leave it behind
                proc.kill()
                proc.communicate()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "Error: interrupted by SIGTERM before the run started; nothing was sent: run the same "
        "command"
    ]


def test_a_second_run_on_a_locked_outdir_exits_75_before_reading_its_input(
    tmp_path: Path,
) -> None:
    """The input is a FIFO nobody writes: a run that read it before trying the lock would
    wait forever; the lock comes first, so it exits 75 at once."""
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    with OutputDir(str(out)).locked():
        proc = run_zbatch(
            "run", "-i", str(fifo), "-o", str(out), "--base-url", "http://127.0.0.1:9", timeout=60
        )
    assert proc.returncode == 75, proc.stderr
    assert "another zbatch run holds" in proc.stderr


# --- case 8: a damaged journal tells -------------------------------------------------------


def test_a_damaged_journal_frame_is_reported_kept_aside_and_costs_only_its_own_rows(
    tmp_path: Path,
) -> None:
    """One byte flipped inside the first frame of a killed run's journal: the next run warns
    naming the file, the bytes skipped and the answers at risk, keeps the segment in
    journal/damaged/, replays the frames after it, and buys again only that frame's rows
    (plus what was in flight at the kill)."""
    rows = prompt_rows(300)
    prompt_of = {r["id"]: r["prompt"] for r in rows}
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer(latency=SLOW) as srv:
        killed_with_a_journal(srv, inp, out)
        segments = sorted((out / "journal").glob("*.journal"))
        assert segments
        segment = segments[0]
        frames = list(read_frames(segment))
        assert len(frames) >= 4, "several group commits"
        first_rows = {
            prompt_of[i]
            for i in pa.ipc.open_stream(frames[0][1]).read_all().column("id").to_pylist()
        }
        held_answers = durable_prompts(out, prompt_of)
        data = bytearray(segment.read_bytes())
        data[40] ^= 0xFF  # inside the first frame's payload
        segment.write_bytes(bytes(data))

        srv.configure(latency=0.002)
        proc = run_zbatch(*run_args(inp, out, srv, "-c", "8"))
        assert proc.returncode == 0, proc.stderr
        after = Counter(srv.stats()["answered_prompts"])
    warning = [line for line in proc.stderr.splitlines() if "is damaged" in line]
    assert len(warning) == 1, proc.stderr
    assert str(segment) in warning[0] and "bytes could not be read" in warning[0]
    assert "answers at risk" in warning[0]
    run_log = [line for line in (out / "run.log").read_text().splitlines() if "is damaged" in line]
    assert len(run_log) == 1 and str(segment) in run_log[0]  # in the run's log too
    assert (out / "journal" / "damaged" / segment.name).exists()
    bought_again = {p for p, n in after.items() if n > 1}
    assert not bought_again & (held_answers - first_rows)
    assert_each_id_once_with_its_answer(out, rows)


def test_workers_wait_while_too_many_answers_wait_for_their_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-pressure: with MAX_UNSYNCED answers recorded and not yet durable, room() blocks
    (a worker sends nothing more) until a group commit has made them durable."""
    import anyio

    from zbatch.budget import Spend
    from zbatch.store import journal as journal_module
    from zbatch.store.parts import PartWriter
    from zbatch.store.storage import LocalStorage

    monkeypatch.setattr(journal_module, "MAX_UNSYNCED", 3)
    writer = PartWriter(
        LocalStorage(tmp_path), "results", pa.schema([("id", pa.string())]), prefix="p"
    )
    journal = journal_module.Journal(
        tmp_path / "journal",
        "p",
        {"results": writer},
        ledger=Spend(),
        save_ledger=lambda _spend: None,
        read_total=lambda: None,
    )
    passed: list[str] = []

    async def worker() -> None:
        await journal.room()
        passed.append("sent")

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for row_id in ("a", "b"):
                journal.record("results", (row_id,))
            await journal.room()  # 2 < 3: no wait
            journal.record("results", ("c",))
            tasks.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            assert passed == [] and journal.unsynced == 3
            await journal.sync()  # the group commit: all three durable
            await anyio.wait_all_tasks_blocked()
            assert passed == ["sent"] and journal.unsynced == 0
        journal.close()

    anyio.run(main)
    frames = list(read_frames(next((tmp_path / "journal").glob("*.journal"))))
    assert pa.ipc.open_stream(frames[0][1]).read_all().column("id").to_pylist() == ["a", "b", "c"]
