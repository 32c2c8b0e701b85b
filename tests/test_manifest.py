"""summary.json as a versioned run manifest: it validates against the JSON Schema shipped in
the package, each shard keeps its own beside the OUTDIR-wide view, and `zbatch status` shows
every shard and the whole (a shard stopped by its budget never reads as "finished")."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import jsonschema
from conftest import TEST_KEY, input_and_outdir, prompt_rows, run_against, run_zbatch
from zai_server import ZaiServer

import zbatch
from zbatch.ops.manifest import SCHEMA_VERSION, schema

PRICED = '[request]\nmax_tokens = 10\n[prices]\n"glm-4.6" = { input = 1000.0, output = 1000.0 }\n'


def validate(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(
        data
    )
    return data


def test_the_schema_ships_in_the_package_and_is_a_valid_schema() -> None:
    shipped = Path(zbatch.__file__).parent / "ops" / "summary.schema.json"
    assert json.loads(shipped.read_text()) == schema()
    jsonschema.Draft202012Validator.check_schema(schema())
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"zbatch.ops" = ["summary.schema.json"]' in pyproject  # package data: in the wheel


def test_a_runs_manifest_validates_and_names_run_input_job_version_host_and_times(
    tmp_path: Path,
) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(6))
    with ZaiServer() as srv:
        run_against(srv, "-i", str(inp), "-o", str(out))
    data = validate(out / "summary.json")
    job = json.loads((out / "job.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["kind"] == "run"
    assert data["exit_code"] == 0 and data["shard"] is None
    assert data["fingerprints"] == {
        "job": job["fingerprint"],
        "input": data["fingerprints"]["input"],
    }  # type: ignore[index]
    assert data["zbatch_version"] == zbatch.__version__
    assert data["host"] == socket.gethostname()
    assert str(data["started_at"]) <= str(data["ended_at"]) == data["last_success_at"]
    parts = [p.name for p in (out / "results").glob("*.parquet")]
    assert parts and all(f"-{data['run_id']}-" in name for name in parts)
    assert TEST_KEY not in (out / "summary.json").read_text()
    # The same input, touched: a new input fingerprint; the job's stays.
    before = data["fingerprints"]
    inp.write_text(inp.read_text() + "\n")
    with ZaiServer() as srv:
        run_against(srv, "-i", str(inp), "-o", str(out))
    after = validate(out / "summary.json")["fingerprints"]
    assert after["job"] == before["job"] and after["input"] != before["input"]  # type: ignore[index]


def test_each_shard_keeps_its_manifest_and_status_shows_a_budget_stop_as_a_stop(
    tmp_path: Path,
) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(20))
    job = tmp_path / "priced.toml"
    job.write_text(PRICED, encoding="utf-8")
    base = (str(job), "-i", str(inp), "-o", str(out))
    with ZaiServer() as srv:
        run_against(srv, *base, "--shard", "0/3")
        run_against(srv, *base, "--shard", "1/3", "--max-cost", "0.001", expect=5)
        shard0 = validate(out / "summaries" / "0of3.json")
        shard1 = validate(out / "summaries" / "1of3.json")
        whole = validate(out / "summary.json")
        assert (shard0["shard"], shard0["exit_code"]) == ("0/3", 0)
        assert (shard1["shard"], shard1["exit_code"]) == ("1/3", 5)
        assert whole["kind"] == "shards" and whole["exit_code"] == 5
        assert "finished" not in str(whole["outcome"])
        assert whole["rows"]["ok"] == shard0["rows"]["ok"] + shard1["rows"]["ok"]  # type: ignore[index]

        status = run_zbatch("status", str(out))
        lines = {line.split("  ")[0]: line for line in status.stdout.splitlines()}
        assert "finished (exit 0)" in lines["shard 0/3"]
        assert "(exit 5)" in lines["shard 1/3"] and "finished" not in lines["shard 1/3"]
        assert "no run yet" in lines["shard 2/3"]
        assert "(exit 5)" in lines["all shards"] and "finished" not in lines["all shards"]
        report = json.loads(run_zbatch("status", str(out), "--json").stdout)
        assert report["last_run"]["exit_code"] == 5
        assert [s["shard"] for s in report["shards"]] == ["0/3", "1/3", "2/3"]

        # Every shard done (the budget raised): the whole reads finished only now.
        run_against(srv, *base, "--shard", "1/3")
        assert (
            validate(out / "summary.json")["outcome"] == "incomplete: 2 of 3 shards have finished"
        )
        run_against(srv, *base, "--shard", "2/3")
        whole = validate(out / "summary.json")
        assert (whole["outcome"], whole["exit_code"]) == ("finished", 0)
        assert whole["last_success_at"] is not None
        status = run_zbatch("status", str(out)).stdout
        assert "all shards" in status and "finished (exit 0)" in status.split("all shards")[1]

        # A whole-job run afterwards: its own manifest, the shards' are of an earlier split.
        run_against(srv, *base)
    assert validate(out / "summary.json")["kind"] == "run"
    assert not list((out / "summaries").iterdir())
    assert "shard 0/3" not in run_zbatch("status", str(out)).stdout


def test_a_damaged_shard_manifest_reads_as_no_run_and_the_next_run_replaces_it(
    tmp_path: Path,
) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(6))
    with ZaiServer() as srv:
        run_against(srv, "-i", str(inp), "-o", str(out), "--shard", "0/2")
        (out / "summaries" / "1of2.json").write_text("{not json", encoding="utf-8")
        status = run_zbatch("status", str(out))
        assert status.returncode == 0, status.stderr
        assert re.search(r"^shard 1/2 +no run yet$", status.stdout, re.MULTILINE)
        run_against(srv, "-i", str(inp), "-o", str(out), "--shard", "1/2")
    assert validate(out / "summaries" / "1of2.json")["exit_code"] == 0
    assert validate(out / "summary.json")["outcome"] == "finished"
