"""Export as a user reads it: JSONL to stdout, ISO-8601 timestamps, JSON kept as JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import write_jsonl

import zbatch
from zbatch.cli import cli


def test_export_to_stdout_is_jsonl_with_iso_timestamps_and_json_as_json(tmp_path, server):
    rows = [
        {"id": "a", "prompt": 'Tags JSON={"tags": ["x", "y"], "n": 2}'},
        {"id": "b", "prompt": 'Tags JSON={"tags": [], "n": 0}'},
    ]
    job = zbatch.Job(
        input_path=str(write_jsonl(tmp_path / "in.jsonl", rows)),
        output_dir=str(tmp_path / "out"),
        base_url=server.base_url,
        response_format="json_object",
        json_fields=("tags:json", "n:int"),
    )
    assert zbatch.run(job, api_key="k").exit_code == 0
    result = CliRunner().invoke(cli, ["export", job.output_dir, "-o", "-"])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    exported = {row["id"]: row for row in map(json.loads, lines)}
    assert exported["a"]["json"] == {"tags": ["x", "y"], "n": 2}
    assert exported["a"]["tags"] == ["x", "y"]  # a json field stays a list
    assert exported["b"]["tags"] == []
    assert exported["a"]["n"] == 2
    stamp = exported["a"]["completed_at"]
    assert stamp[10] == "T" and stamp.endswith("+00:00")
    assert "wrote 2 rows to stdout" in result.output
