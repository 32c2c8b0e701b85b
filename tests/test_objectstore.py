"""ObjectStorage against a loopback S3 (moto): the Storage promises kept without rename or flock."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time

import moto.settings
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from s3_server import S3, moto_endpoint_fixture, s3_fixture  # noqa: F401 (fixtures)

from zbatch.errors import JobError, LockedError, StoreError
from zbatch.store import PartWriter, open_storage
from zbatch.store.objectstore import LEASES, ObjectStorage


def _writer(data: bytes):  # type: ignore[no-untyped-def]
    return lambda handle: handle.write(data)


def test_create_is_create_only_and_never_overwrites(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    storage.create("results/part-1.parquet", _writer(b"first"))
    with pytest.raises(FileExistsError):
        storage.create("results/part-1.parquet", _writer(b"second"))
    assert s3.fs().cat_file(f"{s3.bucket}/out/results/part-1.parquet") == b"first"


def test_a_part_writer_never_overwrites_a_committed_part_of_the_same_name(s3: S3) -> None:
    """Two writers that would name a part alike (a prefix reused): S3 answers the second
    commit 412, and the first part stays as it was."""
    schema = pa.schema([("id", pa.string())])
    storage = ObjectStorage(s3.url("out"))
    first = PartWriter(storage, "results", schema, prefix="same")
    second = PartWriter(ObjectStorage(s3.url("out")), "results", schema, prefix="same")
    first.commit([("a",), ("b",)])
    with pytest.raises(FileExistsError):
        second.commit([("c",)])
    [name] = storage.list("results")
    part = pq.read_table(io.BytesIO(storage.read_bytes(f"results/{name}") or b""))
    assert part.column("id").to_pylist() == ["a", "b"]


def test_a_multipart_create_over_an_existing_name_is_refused_at_completion(s3: S3) -> None:
    """Above one block the upload is multipart; S3 checks If-None-Match when it completes."""
    storage = ObjectStorage(s3.url("out"))
    big = os.urandom(9 * 1024 * 1024)
    storage.create("big", _writer(big))
    with pytest.raises(FileExistsError):
        storage.create("big", _writer(b"x" * len(big)))
    assert s3.fs().cat_file(f"{s3.bucket}/out/big") == big


def test_a_create_that_fails_midway_leaves_nothing(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))

    def half(handle: object) -> None:
        handle.write(os.urandom(9 * 1024 * 1024))  # type: ignore[attr-defined]
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError):
        storage.create("results/part-x.parquet", half)
    assert storage.list("results") == []
    assert s3.fs().find(s3.bucket) == []


def test_read_write_list_delete_move(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out/"))
    assert storage.read_bytes("job.json") is None
    assert storage.list("results") == []
    storage.write_bytes("job.json", b"{}")
    storage.write_bytes("job.json", b'{"v": 2}')
    assert storage.read_bytes("job.json") == b'{"v": 2}'
    with pytest.raises(ValueError, match="must not be empty"):
        storage.create("results/empty", _writer(b""))
    storage.create("results/b", _writer(b"B"))
    storage.create("results/a", _writer(b"A"))
    storage.create("results/sub/c", _writer(b"C"))
    assert storage.list("results") == ["a", "b"]  # only what is directly in the folder
    assert storage.list("") == ["job.json"]
    storage.move("results/a", "generations/1/results/a")
    assert storage.list("results") == ["b"]
    assert storage.read_bytes("generations/1/results/a") == b"A"
    with pytest.raises(FileExistsError):
        storage.move("results/b", "generations/1/results/a")
    assert storage.read_bytes("results/b") == b"B"  # the source stays when the move is refused
    storage.delete("results/b")
    storage.delete("results/b")  # absent is fine
    assert storage.list("results") == []
    assert storage.free_bytes() is None
    assert storage.location == s3.url("out")


def test_arrow_reads_parts_as_a_dataset(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    for n in range(2):
        table = pa.table({"id": [f"{n}-a", f"{n}-b"]})
        storage.create(f"results/part-{n}.parquet", lambda h, t=table: pq.write_table(t, h))
    filesystem, root = storage.arrow()
    paths = [f"{root}/results/{name}" for name in storage.list("results")]
    ids = ds.dataset(paths, filesystem=filesystem).to_table().column("id").to_pylist()
    assert ids == ["0-a", "0-b", "1-a", "1-b"]


def test_open_storage_picks_the_backend_by_scheme(s3: S3, tmp_path: object) -> None:
    assert isinstance(open_storage(s3.url("x")), ObjectStorage)
    assert type(open_storage(f"file://{tmp_path}")).__name__ == "LocalStorage"
    with pytest.raises(JobError, match="ftp:// is not supported"):
        open_storage("ftp://host/out")


def test_a_missing_bucket_is_a_job_error(s3: S3) -> None:
    with pytest.raises(JobError, match="the bucket zb-missing-bucket does not exist"):
        ObjectStorage("s3://zb-missing-bucket/out")


def test_no_permission_is_a_job_error_that_never_shows_the_secret(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With authentication on, moto refuses our (unknown) key as AWS would: 403."""
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(JobError) as caught:
        ObjectStorage(s3.url("out"))
    assert "no permission" in str(caught.value)
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


def test_an_unreachable_endpoint_with_userinfo_never_shows_it(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://user:{secret}@127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(JobError) as caught:
        ObjectStorage(s3.url("out"))
    assert "cannot be reached" in str(caught.value) or "no permission" in str(caught.value)
    assert secret not in str(caught.value)


def test_without_the_extra_the_error_says_what_to_install(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(JobError, match=r"pip install 'zbatch\[s3\]'"):
        ObjectStorage(s3.url("out"))


def test_a_backend_error_during_a_run_is_a_store_error(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    s3.fs().rm(s3.bucket, recursive=True)  # the bucket goes away mid-run
    with pytest.raises(StoreError, match=r"could not use s3://.*/out/job\.json"):
        storage.write_bytes("job.json", b"{}")


# --- the lease -------------------------------------------------------------------------------


def test_a_live_lease_refuses_a_second_holder_naming_the_first(s3: S3) -> None:
    first, second = ObjectStorage(s3.url("out")), ObjectStorage(s3.url("out"))
    with first.lock(".lock"):
        lease = json.loads(first.read_bytes(".lock") or b"{}")
        assert lease["pid"] == os.getpid()
        with pytest.raises(LockedError) as caught, second.lock(".lock"):
            pass
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(caught.value)
        assert caught.value.exit_code == 75
        assert f"pid {os.getpid()} on " in (second.holder(".lock") or "")
    assert first.read_bytes(".lock") is None  # released
    assert second.holder(".lock") is None
    with second.lock(".lock"):
        pass


def test_the_holder_renews_its_lease_while_it_holds_it(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"), lease_seconds=1.5)
    with storage.lock(".lock"):
        first = json.loads(storage.read_bytes(".lock") or b"{}")["expires"]
        deadline = time.monotonic() + 30  # hang guard only
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = json.loads(storage.read_bytes(".lock") or b"{}")["expires"]
            if now > first:
                break
        assert now > first


def _plant_lease(storage: ObjectStorage, *, pid: int, host: str, expires: float) -> None:
    record = {"holder": "pid 1 on elsewhere", "pid": pid, "host": host, "token": "old"}
    storage.write_bytes(".lock", json.dumps({**record, "expires": expires}).encode())


def test_an_expired_lease_is_taken_over(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    _plant_lease(storage, pid=1, host="elsewhere", expires=time.time() - 1)
    with storage.lock(".lock"):
        lease = json.loads(storage.read_bytes(".lock") or b"{}")
        assert lease["pid"] == os.getpid()
    assert storage.list(LEASES) == []  # the take-over marker goes with the release


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(s3: S3) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    storage = ObjectStorage(s3.url("out"))
    _plant_lease(
        storage, pid=int(dead.stdout), host=socket.gethostname(), expires=time.time() + 600
    )
    with storage.lock(".lock"):
        assert json.loads(storage.read_bytes(".lock") or b"{}")["pid"] == os.getpid()


def test_a_live_lease_elsewhere_is_not_taken_over(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    _plant_lease(storage, pid=1, host="elsewhere", expires=time.time() + 600)
    with pytest.raises(LockedError, match="pid 1 on elsewhere"), storage.lock(".lock"):
        pass


def test_two_runs_taking_over_one_expired_lease_race_for_one_marker(s3: S3) -> None:
    """The loser of the create-only take-over marker is refused even though the lease it read
    had expired: only one run ever holds it."""
    storage = ObjectStorage(s3.url("out"))
    _plant_lease(storage, pid=1, host="elsewhere", expires=time.time() - 1)
    storage.create(f"{LEASES}/.lock.old", _writer(b"winner"))  # another run won the marker just now
    with pytest.raises(LockedError), storage.lock(".lock"):
        pass


def test_the_log_handler_appends_whole_objects(s3: S3) -> None:
    storage = ObjectStorage(s3.url("out"))
    storage.write_bytes("run.log", b"an earlier run\n")
    logger = logging.getLogger("zbatch.test.objectlog")
    handler = storage.log_handler("run.log")
    logger.addHandler(handler)
    try:
        logger.warning("first line")
        logger.warning("second line")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert storage.read_bytes("run.log") == b"an earlier run\nfirst line\nsecond line\n"
