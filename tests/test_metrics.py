"""--metrics-file and --pushgateway: what a run writes and pushes, read with prometheus-client's
own parser, holds the run's true figures (summary.json's, and the loopback server's counts)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import (
    TEST_KEY,
    fast_job,
    input_and_outdir,
    prompt_rows,
    run_against,
    write_jsonl,
)
from monitor_server import MonitorServer
from prometheus_client.parser import text_string_to_metric_families
from zai_server import ZaiServer

from zbatch.ops.manifest import unix

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition text: (name, labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value; labels not given must be the run's own (zbatch_job, shard)."""
    matches = [
        v
        for (sample, have), v in found.items()
        if sample == name
        and set(labels.items()) <= have
        and {k for k, _ in have} - set(labels) <= {"zbatch_job", "shard"}
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def but_duration(found: Samples) -> Samples:
    """The samples but the run's duration (which the file and the push take apart)."""
    return {key: v for key, v in found.items() if key[0] != "zbatch_run_duration_seconds"}


def total(found: Samples, name: str) -> float:
    return sum(v for (sample, _), v in found.items() if sample == name)


def faulty_rows() -> list[dict[str, Any]]:
    """40 rows: two rejected once for concurrency (1302), one 500 then fine, one refused by
    the content filter for good (so the run exits 1)."""
    rows = prompt_rows(36)
    rows += [{"id": f"busy-{n}", "prompt": f"Busy {n} FAIL=1302"} for n in range(2)]
    rows.append({"id": "flaky", "prompt": "Flaky FAIL=500"})
    rows.append({"id": "blocked", "prompt": "Blocked FAIL=1301*"})
    return rows


def test_textfile_and_every_push_hold_the_runs_true_figures(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, faulty_rows())
    prom = tmp_path / "textfile" / "zbatch.prom"
    prom.parent.mkdir()
    with ZaiServer(latency=0.01) as srv, MonitorServer() as gateway:
        run_against(
            srv,
            fast_job(tmp_path),
            "-i",
            str(inp),
            "-o",
            str(out),
            "-c",
            "2",
            "--metrics-file",
            str(prom),
            "--pushgateway",
            gateway.url,
            "--metrics-every",
            "0.1",
            expect=1,
        )
        server = srv.stats()
    summary = json.loads((out / "summary.json").read_text())
    text = prom.read_text()
    assert TEST_KEY not in text
    found = samples(text)
    assert [p.name for p in prom.parent.iterdir()] == ["zbatch.prom"]  # no temp file left

    assert value(found, "zbatch_rows_total", outcome="ok") == summary["rows"]["ok"] == 39
    assert value(found, "zbatch_rows_total", outcome="failed") == summary["rows"]["failed"] == 1
    assert value(found, "zbatch_row_errors_total", error_type="content_filter") == 1
    assert total(found, "zbatch_requests_total") == summary["requests"] == server["requests"]
    assert value(found, "zbatch_requests_total", status="200", code="") == server["successes"]
    assert (
        value(found, "zbatch_requests_total", status="429", code="1302")
        == (server["errors_by_code"]["1302"])
    )
    assert value(found, "zbatch_rate_limited_total") == server["errors_by_code"]["1302"] == 2
    assert value(found, "zbatch_retries_total", error_type="rate_limited") == 2
    for kind in ("prompt", "completion", "cached"):
        assert value(found, "zbatch_tokens_total", kind=kind) == summary["tokens"][kind]
    assert math.isclose(value(found, "zbatch_cost_usd_total"), summary["cost_usd"], abs_tol=1e-6)
    latency = summary["latency"]
    assert value(found, "zbatch_request_duration_seconds_count") == latency["count"]
    assert latency["count"] == server["successes"]
    assert math.isclose(
        value(found, "zbatch_request_duration_seconds_sum"), latency["sum_seconds"], abs_tol=1e-3
    )
    assert value(found, "zbatch_request_duration_seconds_bucket", le="+Inf") == latency["count"]
    assert value(found, "zbatch_cache_hits_total") == summary["cache_hits"] == 0
    assert value(found, "zbatch_exit_code") == summary["exit_code"] == 1
    assert value(found, "zbatch_running") == 0
    assert value(found, "zbatch_concurrency_limit") == summary["concurrency"]["final"]
    assert value(found, "zbatch_in_flight_requests") == 0
    assert value(found, "zbatch_rows_pending") == summary["rows"]["pending"] == 0
    assert value(found, "zbatch_run_start_timestamp_seconds") <= unix(summary["ended_at"])
    # exit 1 is no success, and there was none before: no timestamp to alert on yet
    assert not any(name == "zbatch_last_success_timestamp_seconds" for name, _ in found)
    assert value(found, "zbatch_build_info", version=summary["zbatch_version"]) == 1

    pushes = gateway.pushes()
    assert len(pushes) >= 2  # the first tick's and the end's, at least
    assert {p.path for p in pushes} == {f"/metrics/job/{out.name}/shard/all"}
    assert {p.method for p in pushes} == {"PUT"}
    assert but_duration(samples(pushes[-1].body)) == but_duration(found)
    ok_so_far = []
    for push in pushes[:-1]:
        assert TEST_KEY not in push.body
        during = samples(push.body)
        assert value(during, "zbatch_running") == 1
        assert not any(name == "zbatch_exit_code" for name, _ in during)
        ok_so_far.append(value(during, "zbatch_rows_total", outcome="ok"))
    assert ok_so_far == sorted(ok_so_far) and all(ok <= 39 for ok in ok_so_far)


def test_last_success_outlives_a_failed_run_and_a_shard_pushes_to_its_own_group(
    tmp_path: Path,
) -> None:
    rows = prompt_rows(10)
    inp, out = input_and_outdir(tmp_path, rows)
    prom = tmp_path / "zbatch.prom"
    common = ("-i", str(inp), "-o", str(out), "--metrics-file", str(prom))
    with ZaiServer() as srv, MonitorServer() as gateway:
        run_against(srv, fast_job(tmp_path), *common, "--shard", "1/2")
        first = json.loads((out / "summaries" / "1of2.json").read_text())
        found = samples(prom.read_text())
        assert value(found, "zbatch_exit_code", shard="1") == 0
        succeeded = value(found, "zbatch_last_success_timestamp_seconds", shard="1")
        assert math.isclose(succeeded, unix(first["last_success_at"]) or 0, abs_tol=1.0)
        assert first["last_success_at"] is not None

        # New rows, and the account runs dry: exit 3, and the last success stays the first's.
        write_jsonl(inp, [*rows, *prompt_rows(10, start=10)])
        srv.configure(fatal_code="1113")
        run_against(
            srv,
            fast_job(tmp_path),
            *common,
            "--shard",
            "1/2",
            "--pushgateway",
            gateway.url,
            expect=3,
        )
    found = samples(prom.read_text())
    assert value(found, "zbatch_exit_code", shard="1") == 3
    assert value(found, "zbatch_last_success_timestamp_seconds", shard="1") == succeeded
    second = json.loads((out / "summaries" / "1of2.json").read_text())
    assert second["last_success_at"] == first["last_success_at"]
    assert {p.path for p in gateway.pushes()} == {f"/metrics/job/{out.name}/shard/1"}
    assert but_duration(samples(gateway.pushes()[-1].body)) == but_duration(found)


def test_run_metrics_file_in_a_job_file_is_relative_to_it_and_unasked_runs_skip_prometheus(
    tmp_path: Path,
) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(4))
    folder = tmp_path / "jobs"
    (folder / "metrics").mkdir(parents=True)
    job = folder / "job.toml"
    job.write_text('[run]\nmetrics_file = "metrics/zbatch.prom"\n', encoding="utf-8")
    with ZaiServer() as srv:
        run_against(srv, str(job), "-i", str(inp), "-o", str(out))
    found = samples((folder / "metrics" / "zbatch.prom").read_text())
    assert value(found, "zbatch_rows_total", outcome="ok") == 4
    # A run that asks for no metrics never imports prometheus-client.
    script = (
        "import sys, zbatch\n"
        f"job = zbatch.Job(input_path={str(inp)!r}, output_dir={str(tmp_path / 'b')!r}, "
        "simulate=True, simulate_latency=0.0)\n"
        "assert zbatch.run(job).exit_code == 0\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
