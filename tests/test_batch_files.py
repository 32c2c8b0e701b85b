"""Batch input files (zbatch.batch.files) and the ledger (zbatch.batch.ledger)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from zbatch.batch import ledger as ledger_module
from zbatch.batch.files import BatchFile, BatchFileWriter, LineTooBig, custom_id, id_map
from zbatch.batch.ledger import Ledger
from zbatch.store import LocalStorage

ENDPOINT = "/v4/chat/completions"


def body(prompt: str, model: str = "glm-4.6") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()


def lines_of(file: BatchFile) -> list[dict[str, object]]:
    return [json.loads(text) for text in file.path.read_text().splitlines()]


def prompt_of(n: int) -> str:
    """Short prompts first (files fill up by rows), long ones later (files fill up by bytes)."""
    return f"prompt {n} " + ("x" * 200 if n >= 120 else "")


def test_files_stay_within_rows_and_bytes_and_hold_every_row_once(tmp_path: Path) -> None:
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=40, max_bytes=6500)
    done: list[BatchFile] = []
    for n in range(250):
        full = writer.add(f"row-{n:05d}", "glm-4.6", body(prompt_of(n)))
        if full is not None:
            done.append(full)
    done.extend(writer.close())
    seen = []
    for file in done:
        data = file.path.read_bytes()
        assert file.rows <= 40 and file.bytes == len(data) <= 6500
        assert file.sha256 == hashlib.sha256(data).hexdigest()
        lines = lines_of(file)
        assert len(lines) == file.rows
        for item, row_id in zip(lines, file.ids, strict=True):
            assert item["custom_id"] == row_id
            assert item["method"] == "POST" and item["url"] == ENDPOINT
            n = int(row_id.removeprefix("row-"))
            assert item["body"] == json.loads(body(prompt_of(n)))
        seen.extend(file.ids)
    assert seen == sorted(seen) and seen == [f"row-{n:05d}" for n in range(250)]
    assert any(file.rows == 40 for file in done)
    assert any(file.bytes > 6000 and file.rows < 40 for file in done)  # the byte limit cut it


def test_one_model_per_file(tmp_path: Path) -> None:
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=100, max_bytes=10**6)
    for n in range(10):
        model = "glm-4.6" if n % 2 else "glm-5"
        assert writer.add(f"row-{n:05d}", model, body(str(n), model)) is None
    files = writer.close()
    assert {f.model: f.ids for f in files} == {
        "glm-5": [f"row-{n:05d}" for n in range(0, 10, 2)],
        "glm-4.6": [f"row-{n:05d}" for n in range(1, 10, 2)],
    }
    for file in files:
        assert {line["body"]["model"] for line in lines_of(file)} == {file.model}  # type: ignore[index]


def test_short_and_odd_ids_are_mapped_reversibly_and_never_collide(tmp_path: Path) -> None:
    """Ids the provider would refuse as custom_ids are sent as zbrow-<line>; the ids list maps
    them back; an id that itself looks like a mapped one is mapped too, so none collide."""
    ids = ["a", "12345", "long-enough", "with space!", "zbrow-000001", "ümlaut-id", "x" * 65]
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=100, max_bytes=10**6)
    for row_id in ids:
        writer.add(row_id, "glm-4.6", body(row_id))
    (file,) = writer.close()
    sent = [line["custom_id"] for line in lines_of(file)]
    assert sent == [
        "zbrow-000000",
        "zbrow-000001",
        "long-enough",
        "zbrow-000003",
        "zbrow-000004",
        "zbrow-000005",
        "zbrow-000006",
    ]
    assert all(len(c) >= 6 for c in sent) and len(set(sent)) == len(sent)  # type: ignore[arg-type]
    assert id_map(file.ids) == dict(zip(sent, ids, strict=True))
    assert custom_id("zbrow-1", 3) == "zbrow-000003"


def test_a_request_bigger_than_a_file_is_refused_and_the_files_stay_valid(tmp_path: Path) -> None:
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=100, max_bytes=500)
    writer.add("row-00001", "glm-4.6", body("small"))
    with pytest.raises(LineTooBig, match="more than a batch file may hold"):
        writer.add("row-00002", "glm-4.6", body("y" * 600))
    (file,) = writer.close()
    assert file.ids == ["row-00001"] and len(lines_of(file)) == 1


def test_discard_removes_the_open_files(tmp_path: Path) -> None:
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=100, max_bytes=10**6)
    writer.add("row-00001", "glm-4.6", body("a"))
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def batch_file(tmp_path: Path, ids: list[str]) -> BatchFile:
    writer = BatchFileWriter(tmp_path, endpoint=ENDPOINT, max_rows=10**6, max_bytes=10**9)
    for row_id in ids:
        writer.add(row_id, "glm-4.6", body(row_id))
    (file,) = writer.close()
    return file


def test_the_ledger_records_ids_before_the_record_and_reads_them_back(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "out")
    ledger = Ledger(storage)
    first = ledger.add(batch_file(tmp_path, ["ab", "row-000002"]), "fp1")
    assert storage.list("batches") == ["00001.ids", "00001.json"]
    second = ledger.add(batch_file(tmp_path, ["row-000003"]), "fp1")
    assert (first.seq, second.seq, first.state) == (1, 2, "written")
    assert ledger.ids(first) == ["ab", "row-000002"]
    assert id_map(ledger.ids(first)) == {"zbrow-000000": "ab", "row-000002": "row-000002"}

    second.state, second.file_id = "uploaded", "file-9"
    ledger.save(second)
    again = Ledger(LocalStorage(tmp_path / "out")).submissions()
    assert [(s.seq, s.state, s.file_id) for s in again] == [
        (1, "written", None),
        (2, "uploaded", "file-9"),
    ]
    assert again[1].upload_name == f"zbatch-00002-{again[1].sha256[:16]}.jsonl"

    assert "ab" not in ledger.open_ids("fp2")  # another generation's rows are not held
    held = ledger.open_ids("fp1")
    assert all(i in held for i in ["ab", "row-000002", "row-000003"])
    first.state = "collected"
    ledger.save(first)
    held = ledger.open_ids("fp1")
    assert "ab" not in held and "row-000003" in held


def test_two_writers_never_share_a_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard that took number 1 between our look and our write pushes us to number 2."""
    storage = LocalStorage(tmp_path / "out")
    other, ours = Ledger(storage), Ledger(storage)
    real = ledger_module.Ledger.submissions

    def stale(self: Ledger) -> list[ledger_module.Submission]:
        return [] if self is ours else real(self)

    monkeypatch.setattr(ledger_module.Ledger, "submissions", stale)
    other.add(batch_file(tmp_path, ["row-000001"]), "fp")
    mine = ours.add(batch_file(tmp_path, ["row-000002"]), "fp")
    assert mine.seq == 2
    assert ours.ids(mine) == ["row-000002"]
