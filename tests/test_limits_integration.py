"""Limits that hold under real provider behaviour: the installed zbatch against the loopback server.

The fake Z.AI server enforces what the real one does (an in-flight cap answering 429/1302, an
RPM window answering 1303, Retry-After, quotas, a wrong key) and records every request's
arrival time, so these tests judge zbatch's pacing and adaptation from the server's side.
Timing bounds are generous (CI has two noisy cores) and each test lasts a few seconds: where a
real job runs for hours, the tests scale the backoff base down with a job file so that one
unlucky row's backoff does not stand for the whole run.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from conftest import (
    fast_job,
    input_and_outdir,
    outcome_ids,
    prompt_rows,
    read_table,
    run_against,
    start_zbatch,
    wait_for,
    zbatch_env,
)
from zai_server import ZaiServer, answer_for, max_in_window


def limits_job(tmp_path: Path, **limits: Any) -> str:
    """fast_job with a backoff slow enough for a concurrency cap to be felt."""
    return fast_job(tmp_path, **{"backoff_base": 0.05, "backoff_cap": 1.0, **limits})


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_answers(outdir: Path, prompts: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every id of ``prompts`` exactly once in results, holding the answer to its own prompt."""
    results, _ = outcome_ids(outdir)
    assert sorted(results) == sorted(prompts), "results/ does not hold each id exactly once"
    by_id = {row["id"]: row for row in read_table(outdir / "results").to_pylist()}
    for row_id, text in prompts.items():
        assert by_id[row_id]["content"] == answer_for(user(text)), row_id
    return by_id


def summary(outdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((outdir / "summary.json").read_text(encoding="utf-8"))
    return data


# --------------------------------------------------------------------------- concurrency


def test_adaptive_concurrency_finds_an_unknown_in_flight_cap(tmp_path: Path) -> None:
    """Against a server that allows 6 in flight, --concurrency 48 finds the cap: every row is
    answered correctly, 1302 rejections stay under 15 % of requests, the limiter concludes
    "cap≈6" and never holds fewer than 6 in flight.

    Nothing here depends on the machine's speed. The server cannot reject a request while the
    client holds 6 or fewer in flight (it counts a request until it has answered it, before the
    client reads the answer, so the client's count of a request's start level is never below
    the server's): nothing started at 6 or under is rejected, the first rejection seen is at 7
    or more, and the hold it starts is 6 or more. A client that sees answers late (a loaded
    machine) sends more of the start-up burst before it sees a rejection; each probe above the
    cap afterwards costs one rejection, at ever longer intervals. tests/test_limits.py
    simulates the starved client; throughput against a run told the cap is measured in
    bench/limits.py. The limiter's conclusion is read from the summary and run.log, as the
    user sees it.
    """
    data = prompt_rows(1500)
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer(max_inflight=6, latency=0.02) as srv:
        job = limits_job(tmp_path)
        run_against(srv, job, "-i", str(inp), "-o", str(out), "--concurrency", "48")
        stats = srv.stats()

    assert_answers(out, {r["id"]: r["prompt"] for r in data})
    rejected = stats["errors_by_code"].get("1302", 0)
    assert stats["errors_by_code"] == {"1302": rejected}
    assert 0 < rejected < 0.15 * stats["requests"], (rejected, stats["requests"])
    figures = summary(out)
    assert figures["requests"] == stats["requests"]
    # The limiter held just under the first rejected level and named the cap, in the summary
    # and in run.log; the client never went under the cap (nothing at or under it is rejected).
    assert figures["concurrency"]["minimum"] == 6
    assert figures["concurrency"]["limiter"].startswith("cap≈6: "), figures["concurrency"]
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "limiter: cap≈6: " in log


def test_a_storm_of_rejections_is_not_taken_for_a_cap(tmp_path: Path) -> None:
    """30 % of requests rejected with 1302 whatever the load (seeded): the limiter says "no
    cap", keeps the full concurrency, and every row ends in results once with its own answer.
    Rejections are not counted against --max-retries: a row rejected five times in a row is
    answered with --max-retries 1."""
    data = prompt_rows(400)
    data.append({"id": "rejected-5", "prompt": "Five times? FAIL=1302,1302,1302,1302,1302"})
    inp, out = input_and_outdir(tmp_path, data)
    flags = ["--concurrency", "16", "--max-retries", "1"]
    with ZaiServer(rates={"1302": 0.3}, seed=3, latency=0.01) as srv:
        run_against(srv, limits_job(tmp_path), "-i", str(inp), "-o", str(out), *flags)
        stats = srv.stats()

    assert_answers(out, {r["id"]: r["prompt"] for r in data})
    rejected = stats["errors_by_code"]["1302"]
    assert rejected > 0.2 * stats["requests"]  # the storm did happen
    assert stats["successes"] == 401
    figures = summary(out)
    assert figures["concurrency"]["final"] == 16
    assert figures["concurrency"]["limiter"].startswith("no cap: "), figures["concurrency"]
    assert "storm or background noise" in (out / "run.log").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- RPM


def test_rpm_spaces_starts_evenly_and_uses_the_cap(tmp_path: Path) -> None:
    """--rpm 600 (10/s) paces every start, the retry included: the 41 starts reach the server
    spread over at least the 4 s the cap asks for (an unpaced client sends them in a blink),
    and a server enforcing the same cap never answers 1303.

    Only bounds that machine load cannot break are asserted here (load can only spread the
    starts further); how close to the cap the rate gets is measured in bench/limits.py."""
    rpm = 600
    data = prompt_rows(39)
    data.append({"id": "retried", "prompt": "Paced retry FAIL=500"})
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer(rpm=rpm) as srv:
        run_against(srv, limits_job(tmp_path), "-i", str(inp), "-o", str(out), "--rpm", str(rpm))
        stats = srv.stats()

    by_id = assert_answers(out, {r["id"]: r["prompt"] for r in data})
    assert by_id["retried"]["attempts"] == 2
    starts = sorted(stats["request_starts"])
    assert len(starts) == 41  # 40 rows and one retry: the retry is paced like any start
    assert stats["errors_by_code"].get("1303", 0) == 0
    assert max_in_window(starts, 60.0) <= rpm
    paced = (len(starts) - 1) * 60 / rpm  # 4 s
    # The first start may reach the server late by the time a loaded loop takes to send it:
    # a second of slack for that, which an unpaced client (all 41 within ~0.1 s) never meets.
    assert starts[-1] - starts[0] >= paced - 1.0, starts[:15]


# --------------------------------------------------------------------------- Retry-After


def test_retry_after_header_is_honoured(tmp_path: Path) -> None:
    """A 429 carrying Retry-After: 1 is retried no sooner than about a second later, although
    the backoff alone would retry within a few hundredths of a second."""
    data = prompt_rows(4)
    data.append({"id": "wait", "prompt": "Please wait FAIL=retryafter"})
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer() as srv:
        job = limits_job(tmp_path, backoff_base=0.01, backoff_cap=0.05)
        run_against(srv, job, "-i", str(inp), "-o", str(out))
        stats = srv.stats()

    by_id = assert_answers(out, {r["id"]: r["prompt"] for r in data})
    assert by_id["wait"]["attempts"] == 2
    # bodies_sample and request_starts are both in arrival order, one entry per request.
    times = [
        start
        for start, body in zip(stats["request_starts"], stats["bodies_sample"], strict=True)
        if body["messages"][-1]["content"] == "Please wait FAIL=retryafter"
    ]
    assert len(times) == 2
    gap = times[1] - times[0]
    # A lower bound only: load can delay the retry further, never bring it forward.
    assert gap >= 0.95, f"retried {gap:.3f} s after a Retry-After: 1 answer"


# --------------------------------------------------------------------------- quota


def test_quota_stop_names_the_reset_and_resumes_afterwards(tmp_path: Path) -> None:
    """A daily quota answer (1304) stops the run with exit 4 and a message naming the reset time
    and how to resume; the same command afterwards completes the job with every row answered
    exactly once (nothing paid for twice)."""
    data = prompt_rows(40)
    data[10] = {"id": data[10]["id"], "prompt": "Over the quota FAIL=1304"}
    prompts = {r["id"]: r["prompt"] for r in data}
    inp, out = input_and_outdir(tmp_path, data)
    args = ("-i", str(inp), "-o", str(out), "--concurrency", "4")
    with ZaiServer(latency=0.01) as srv:
        first = run_against(srv, *args, expect=4)
        tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
        assert "quota" in first.stderr
        assert f"resets at {tomorrow}" in first.stderr, first.stderr
        assert "run the same command" in first.stderr
        assert summary(out)["exit_code"] == 4
        done_first, _ = outcome_ids(out)
        assert len(done_first) < 40
        assert len(done_first) == srv.stats()["successes"]

        run_against(srv, *args)
        stats = srv.stats()

    assert_answers(out, prompts)
    answered = stats["answered_prompts"]
    assert sorted(answered) == sorted(prompts.values())  # each prompt answered exactly once
    assert stats["errors_by_code"] == {"1304": 1}


def test_wait_for_quota_past_its_reset_backs_off_and_stops_after_the_bounded_wait(
    tmp_path: Path,
) -> None:
    """Quota answers naming a reset that has passed (the quota stays exhausted): --wait-for-quota
    pauses 1, 2, then 4 s, rather than every second forever, and with quota_wait_seconds = 7.5
    the next pause (8 s) would go past it, so the run stops with exit 4.

    After a pause one request at a time finds out whether the quota is back: at most the 8
    workers' first requests go out before the first pause, then one per pause (3), plus one for
    each of those first answers that might end a probe early on a starved machine (7) - 18,
    where all 8 workers sending after each pause would make at least 25."""
    data = prompt_rows(20)
    inp, out = input_and_outdir(tmp_path, data)
    job = limits_job(tmp_path, quota_wait_seconds=7.5)
    with ZaiServer(fatal_code="1304", quota_reset="2020-01-01 00:00:00") as srv:
        proc = run_against(
            srv, job, "-i", str(inp), "-o", str(out), "-c", "8", "--wait-for-quota", expect=4
        )
        stats = srv.stats()

    assert "not back within what --wait-for-quota waits (limits.quota_wait_seconds = 7.5)" in (
        proc.stderr
    )
    assert stats["successes"] == 0
    assert 4 <= stats["requests"] <= 8 + 3 + 7, stats["requests"]
    starts = stats["request_starts"]
    assert starts[-1] - starts[0] >= 7.0  # the pauses of 1, 2 and 4 s were taken
    assert summary(out)["exit_code"] == 4
    assert not (out / "results").exists() or read_table(out / "results").num_rows == 0


def test_wait_for_quota_carries_on_when_the_quota_comes_back(tmp_path: Path) -> None:
    """The quota is exhausted past its named reset, then comes back during a pause: the run
    carries on and answers every row exactly once (exit 0)."""
    data = prompt_rows(30)
    prompts = {r["id"]: r["prompt"] for r in data}
    inp, out = input_and_outdir(tmp_path, data)
    job = limits_job(tmp_path, quota_wait_seconds=120)
    with ZaiServer(fatal_code="1304", quota_reset="2020-01-01 00:00:00", latency=0.01) as srv:
        args = ("run", job, "-i", str(inp), "-o", str(out), "-c", "4", "--wait-for-quota")
        proc = start_zbatch(*args, "--base-url", srv.base_url)
        try:
            wait_for(lambda: srv.stats()["requests"] >= 1)
            srv.configure(fatal_code=None)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        stats = srv.stats()

    assert proc.returncode == 0, err
    assert "pausing all requests" in err
    assert_answers(out, prompts)
    assert sorted(stats["answered_prompts"]) == sorted(prompts.values())
    assert 1 <= stats["errors_by_code"]["1304"] <= 8  # at most two rounds of 4 hit the quota


# --------------------------------------------------------------------------- every wait bounded


def test_a_retry_after_past_the_rows_deadline_gives_the_row_up_at_once(tmp_path: Path) -> None:
    """A 1302 asking for Retry-After: 1 s when --max-attempt-seconds leaves 0.3 s: the row is
    given up (retryable, for the next run) after that one request instead of waiting, and the
    other rows are answered."""
    data = prompt_rows(5)
    data.append({"id": "parked", "prompt": "Wait for me FAIL=retryafter*"})
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer() as srv:
        job = limits_job(tmp_path, max_attempt_seconds=0.3)
        run_against(srv, job, "-i", str(inp), "-o", str(out), expect=1)
        stats = srv.stats()

    results, errors = outcome_ids(out)
    assert sorted(results) == sorted(r["id"] for r in data[:5])
    assert errors == ["parked"]
    (error,) = read_table(out / "errors").to_pylist()
    assert (error["attempts"], error["retryable"], error["error_code"]) == (1, True, "1302")
    assert stats["requests"] == 6


def test_an_unbounded_backoff_still_ends_by_the_rows_deadline(tmp_path: Path) -> None:
    """backoff_base 1e300 with backoff_cap inf (base * 2**n is inf): each wait is drawn within
    the row's remaining time, so a row that always fails ends by --max-attempt-seconds rather
    than sleeping for ever."""
    data = [{"id": "doomed", "prompt": "Never FAIL=500*"}, *prompt_rows(3)]
    inp, out = input_and_outdir(tmp_path, data)
    job = tmp_path / "unbounded.toml"
    job.write_text(
        "[limits]\nbackoff_base = 1e300\nbackoff_cap = inf\nmax_retries = 1000\n"
        "max_attempt_seconds = 1.0\n",
        encoding="utf-8",
    )
    with ZaiServer() as srv:
        run_against(srv, str(job), "-i", str(inp), "-o", str(out), expect=1, timeout=60)

    results, errors = outcome_ids(out)
    assert sorted(results) == ["row00000", "row00001", "row00002"]
    assert errors == ["doomed"]
    (error,) = read_table(out / "errors").to_pylist()
    assert error["retryable"] is True and error["error_code"] == "500"


# --------------------------------------------------------------------------- transient storm


def test_transient_fault_storm_ends_with_every_row_answered_once(tmp_path: Path) -> None:
    """Random 1302 / 500 / 503 / resets / broken JSON / answers slower than --timeout: with
    --max-retries 10 every row still ends in results exactly once with its own answer."""
    rates = {"1302": 0.05, "500": 0.02, "503": 0.02, "reset": 0.01, "slow": 0.01, "badjson": 0.01}
    data = prompt_rows(300)
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer(rates=rates, slow_seconds=3.0, seed=7, latency=0.005) as srv:
        run_against(
            srv,
            limits_job(tmp_path),
            "-i",
            str(inp),
            "-o",
            str(out),
            "--timeout",
            "1",
            "--max-retries",
            "10",
            timeout=90,
        )
        stats = srv.stats()

    assert_answers(out, {r["id"]: r["prompt"] for r in data})
    _, errors = outcome_ids(out)
    assert errors == []
    faults = stats["errors_by_code"]
    assert sum(faults.values()) > 0.05 * 300, faults  # the storm did happen
    assert stats["successes"] == 300  # each row answered once: slow answers were abandoned
    figures = summary(out)
    assert figures["rows"]["ok"] == 300
    assert sum(figures["retries"].values()) == figures["requests"] - 300


# --------------------------------------------------------------------------- auth


def test_wrong_key_stops_at_once_and_never_leaks(tmp_path: Path) -> None:
    """A key the server refuses (401/1001) stops the run with exit 3 within seconds and a message
    to check the key, after no more requests than were in flight; the key appears in no output
    file and not on stdout/stderr."""
    secret = "zk-wrong-7f3a9c1d2e5b4a60"
    data = prompt_rows(100)
    inp, out = input_and_outdir(tmp_path, data)
    with ZaiServer(require_key="zk-the-right-one-00000000", latency=0.01) as srv:
        proc = run_against(
            srv,
            "-i",
            str(inp),
            "-o",
            str(out),
            "--concurrency",
            "16",
            env=zbatch_env(ZAI_API_KEY=secret),
            expect=3,
        )
        stats = srv.stats()

    assert "check the API key" in proc.stderr
    assert stats["auth_headers_seen"] >= 1  # the key was really sent, and refused
    assert stats["successes"] == 0
    assert stats["requests"] <= 16 + 2
    errors = read_table(out / "errors").to_pylist()
    assert errors and all(e["error_type"] == "fatal" and e["retryable"] for e in errors)
    assert {e["error_code"] for e in errors} == {"1001"}

    assert secret not in proc.stdout + proc.stderr
    for error in errors:
        assert secret not in json.dumps(error, default=str)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
