"""max_cost: a budget for an OUTDIR across runs, checked before each request on its worst
case, counted from every billed answer, kept in OUTDIR/spend.json. Real processes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from conftest import (
    input_and_outdir,
    outcome_ids,
    prompt_rows,
    read_table,
    run_against,
    run_zbatch,
    write_jsonl,
)
from zai_server import ZaiServer, answer_for

# USD per 1M tokens: a row of the loopback server costs about $0.012, at worst $0.017.
PRICED = """
[request]
max_tokens = 10

[prices]
"glm-4.6" = { input = 1000.0, output = 1000.0 }
"""


def priced_job(tmp_path: Path) -> str:
    path = tmp_path / "priced.toml"
    path.write_text(PRICED, encoding="utf-8")
    return str(path)


def status_of(out: Path) -> dict[str, object]:
    proc = run_zbatch("status", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def test_budget_stops_with_exit_5_within_budget_and_a_larger_one_finishes_without_repeats(
    tmp_path: Path,
) -> None:
    rows = prompt_rows(50)
    inp, out = input_and_outdir(tmp_path, rows)
    job = priced_job(tmp_path)
    budget = 0.4 * 50 * 0.012  # 40% of the rows fit
    with ZaiServer() as srv:
        proc = run_against(
            srv,
            job,
            "-i",
            str(inp),
            "-o",
            str(out),
            "-c",
            "4",
            "--max-cost",
            f"{budget}",
            expect=5,
        )
        message = proc.stderr.strip().splitlines()[-1]
        assert f"of ${budget:.4f}" in message and "raise --max-cost" in message, message
        spent = json.loads((out / "spend.json").read_text())["usd"]
        assert 0 < spent <= budget
        first_ok = len(read_table(out / "results"))
        assert 0 < first_ok < 50
        status = status_of(out)
        assert status["cost_usd"] == round(spent, 6) and status["max_cost"] == budget
        assert "spent so far" in run_zbatch("status", str(out)).stdout

        run_against(srv, job, "-i", str(inp), "-o", str(out), "-c", "4", "--max-cost", "10")
        answered = Counter(srv.stats()["answered_prompts"])

    assert max(answered.values()) == 1, "a prompt was bought twice"
    assert sum(answered.values()) == 50
    results, errors = outcome_ids(out)
    assert Counter(results) == Counter(r["id"] for r in rows) and not errors
    by_id = {r["id"]: r["prompt"] for r in rows}
    for result in read_table(out / "results").to_pylist():
        assert result["content"] == answer_for([{"role": "user", "content": by_id[result["id"]]}])
    assert json.loads((out / "spend.json").read_text())["usd"] > spent


def test_a_spent_budget_sends_nothing(tmp_path: Path) -> None:
    inp, out = input_and_outdir(tmp_path, prompt_rows(5))
    with ZaiServer() as srv:
        run_against(
            srv, priced_job(tmp_path), "-i", str(inp), "-o", str(out), "--max-cost", "0", expect=5
        )
        assert srv.stats()["requests"] == 0


def test_status_counts_every_billed_answer_not_only_results(tmp_path: Path) -> None:
    """Answers that failed the label check and their re-asks were paid for: status says so."""
    rows = [
        {"id": f"r{i:02d}", "prompt": f"row {i} LABEL={'yes' if i % 2 else 'maybe'}"}
        for i in range(40)
    ]
    inp, out = input_and_outdir(tmp_path, rows)
    with ZaiServer() as srv:
        run_against(
            srv,
            priced_job(tmp_path),
            "-i",
            str(inp),
            "-o",
            str(out),
            "--choices",
            "yes,no",
            expect=1,
        )
        answers = srv.stats()["successes"]
    summary = json.loads((out / "summary.json").read_text())
    assert answers == 20 + 2 * 20  # each invalid label re-asked once
    assert status_of(out)["cost_usd"] == summary["cost_usd"] > 0
    ledger = json.loads((out / "spend.json").read_text())
    assert ledger["answers"] == answers


def test_validate_warns_when_the_estimate_exceeds_the_budget(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompt_rows(50))
    validate = ["validate", priced_job(tmp_path), "-i", str(inp), "-o", str(tmp_path / "out")]
    proc = run_zbatch(*validate, "--max-cost", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert "exceeds what is left of the budget" in proc.stdout and "exit 5" in proc.stdout
    proc = run_zbatch(*validate, "--max-cost", "100")
    assert "budget" not in proc.stdout


def test_max_cost_without_a_price_is_a_job_error(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", prompt_rows(2))
    proc = run_zbatch(
        "run",
        "-i",
        str(inp),
        "-o",
        str(tmp_path / "out"),
        "--model",
        "no-such-model",
        "--max-cost",
        "1",
        "--base-url",
        "http://127.0.0.1:9/v1",
    )
    assert proc.returncode == 2
    assert "limits.max_cost needs a price" in proc.stderr and "[prices]" in proc.stderr


def test_spend_of_earlier_force_generations_stays_in_the_budget(tmp_path: Path) -> None:
    """--force archives the results, not what they cost: the budget covers every generation."""
    inp, out = input_and_outdir(tmp_path, prompt_rows(10))
    job = priced_job(tmp_path)
    with ZaiServer() as srv:
        run_against(srv, job, "-i", str(inp), "-o", str(out))
        first = json.loads((out / "spend.json").read_text())
        run_against(srv, job, "-i", str(inp), "-o", str(out), "--system", "Be brief.", "--force")
        answers = srv.stats()["successes"]
    assert list((out / "generations").iterdir()), "the first generation was archived"
    ledger = json.loads((out / "spend.json").read_text())
    assert first["answers"] == 10 and ledger["answers"] == answers == 20
    assert ledger["usd"] > first["usd"]
    assert status_of(out)["cost_usd"] == round(ledger["usd"], 6)
