"""Batch submissions are idempotent (issue 20, case 4): a create whose answer is lost is looked
up by its client token or file id before another is created, also through a lagging listing;
a provider without a listing stops the run with one line instead of creating on a guess.

The installed zbatch script against tests/batch_server.py, which loses create answers (the
batch is made, then the connection is reset or a gateway answers 502), lags its listing and
can have none. The server counts creates: each row is paid for once, in exactly one batch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from batch_server import BatchServer
from conftest import prompt_rows, read_table, run_zbatch
from test_batch_mode import batch_run as batch_mode_run
from zai_server import answer_for

ROWS = 30


def batch_run(srv: BatchServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``zbatch run --mode batch`` of ROWS rows (tests/test_batch_mode.py), any exit code."""
    return batch_mode_run(srv, tmp_path, *args, expect=None, rows=ROWS)


def check_all_answered_once(srv: BatchServer, outdir: Path) -> None:
    table = read_table(outdir / "results")
    got = dict(zip(*(table.column(c).to_pylist() for c in ("id", "content")), strict=True))
    assert table.num_rows == len(got) == ROWS
    for row in prompt_rows(ROWS):
        assert got[row["id"]] == answer_for([{"role": "user", "content": row["prompt"]}])
    assert srv.submitted == {row["id"]: 1 for row in prompt_rows(ROWS)}
    assert len(srv.batches()) == 1


def ledger_states(outdir: Path) -> list[str]:
    return [json.loads(p.read_text())["state"] for p in sorted((outdir / "batches").glob("*.json"))]


@pytest.mark.parametrize("how", ["reset", "502"])
def test_a_lost_create_answer_is_found_and_never_paid_twice(tmp_path: Path, how: str) -> None:
    with BatchServer() as srv:
        srv.lose_create(how)
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert srv.requests["create"] == 1  # looked up, not created again
        check_all_answered_once(srv, tmp_path / "out")
    assert "answer to creating its batch was lost" in proc.stderr + proc.stdout
    [batch] = srv.batches()
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "out" / "batches").glob("*.json")]
    assert batch["metadata"]["zbatch_token"] == record["token"]


def test_a_lagging_listing_is_waited_for_within_a_bound(tmp_path: Path) -> None:
    """The new batch shows only in the fourth listing: zbatch lists again before creating."""
    with BatchServer(list_lag=3) as srv:
        srv.lose_create("reset")
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert srv.requests["create"] == 1
        assert srv.requests["list"] == 4
        check_all_answered_once(srv, tmp_path / "out")


def test_a_listing_that_never_shows_it_is_given_up_on_after_a_bounded_wait(
    tmp_path: Path,
) -> None:
    """A 502 made before the batch was created: the listing never shows one, so after the
    bounded number of listings the batch is created (once)."""
    with BatchServer() as srv:
        srv.inject("create", 502)  # refused before anything was made
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert srv.requests["create"] == 2 and srv.requests["list"] == 6
        check_all_answered_once(srv, tmp_path / "out")


def test_without_a_listing_the_run_stops_with_one_line_and_never_creates_on_a_guess(
    tmp_path: Path,
) -> None:
    outdir = tmp_path / "out"
    with BatchServer(no_listing=True) as srv:
        srv.lose_create("reset")
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 3, proc.stderr
        [file_id] = [u["id"] for u in srv.uploads]
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("Error: ") and "Traceback" not in proc.stderr
        assert file_id in lines[-1] and "--resubmit-unconfirmed" in lines[-1]
        assert "no batch listing" in lines[-1]
        # The same command again: still no guess, the rows stay reserved.
        again = batch_run(srv, tmp_path)
        assert again.returncode == 3 and file_id in again.stderr
        assert srv.requests["create"] == 1 and len(srv.uploads) == 1
        assert ledger_states(outdir) == ["creating"]
        status = run_zbatch("status", str(outdir), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pending"] == ROWS
        assert read_table(outdir / "results").num_rows == 0
        # Only the explicit flag creates it again (here the server does hold the first batch,
        # so its rows are now paid twice: why it takes the user's word).
        resubmitted = batch_run(srv, tmp_path, "--resubmit-unconfirmed")
        assert resubmitted.returncode == 0, resubmitted.stderr
        assert srv.requests["create"] == 2
    assert ledger_states(outdir) == ["collected"]
    table = read_table(outdir / "results")
    assert sorted(table.column("id").to_pylist()) == [r["id"] for r in prompt_rows(ROWS)]


def test_a_create_cut_off_before_its_record_reattaches_once_the_listing_shows_it(
    tmp_path: Path,
) -> None:
    """The state a kill between create and the ledger write leaves ("creating", batch made):
    the next run finds the batch through a listing that lags, and creates nothing."""
    outdir = tmp_path / "out"
    with BatchServer(no_listing=True) as srv:
        srv.lose_create("502")
        assert batch_run(srv, tmp_path).returncode == 3
        assert ledger_states(outdir) == ["creating"]
        srv.configure(no_listing=False, list_lag=0)
        with srv._locked() as state:  # the batch made before the "kill" lags in the listing
            for batch in state.batches.values():
                batch.unlisted = 2
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert srv.requests["create"] == 1
        check_all_answered_once(srv, outdir)
    assert "re-attached" in proc.stderr + proc.stdout


def test_a_create_the_provider_refused_is_sent_again_without_a_lookup(tmp_path: Path) -> None:
    """No balance (1113) is an answer: no batch was made, so the next run creates at once."""
    outdir = tmp_path / "out"
    with BatchServer() as srv:
        srv.inject("create", code="1113")
        assert batch_run(srv, tmp_path).returncode == 3
        assert ledger_states(outdir) == ["uploaded"]
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert srv.requests["list"] == 0 and len(srv.uploads) == 1
        check_all_answered_once(srv, outdir)


def test_an_upload_that_may_not_have_happened_is_packed_again_without_a_file_listing(
    tmp_path: Path,
) -> None:
    """A file recorded but not known to be uploaded (here the upload was refused) and a
    provider that cannot list files: the rows are packed and uploaded again (uploads cost
    nothing; only batches are paid) instead of stopping as if there were no Batch API."""
    outdir = tmp_path / "out"
    with BatchServer() as srv:
        srv.inject("upload", 401, "1002")
        assert batch_run(srv, tmp_path).returncode == 3
        assert ledger_states(outdir) == ["written"]
        srv.configure(no_listing=True)
        proc = batch_run(srv, tmp_path)
        assert proc.returncode == 0, proc.stderr
        check_all_answered_once(srv, outdir)
    assert ledger_states(outdir) == ["abandoned", "collected"]
