"""`zbatch review`: the rows most worth a human look, each with why, as CSV, JSONL or Label
Studio's import JSON. Runs go to the loopback Z.AI server, which answers each row with the
label its prompt names (LABEL=...), so every reason a row is picked for is known in advance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import run_against, run_zbatch, write_jsonl, zbatch_env
from zai_server import ZaiServer

from zbatch.cli import cli

CHOICES = "cat,dog,bird"


def two_runs(server: ZaiServer, tmp_path: Path) -> tuple[Path, Path, list[dict[str, str]]]:
    """Run A: 30 rows, gold column `truth`; rows 0-5 answered wrong against gold, row 6
    answers `banana` (invalid_label); run B (another prompt): rows 3-8 labelled otherwise."""
    rows, other = [], []
    for i in range(30):
        truth = ["cat", "dog", "bird"][i % 3]
        answer = "dog" if i < 6 and truth != "dog" else ("bird" if i < 6 else truth)
        if i == 6:
            answer = "banana"
        rows.append({"id": f"r{i:02d}", "prompt": f"Row {i} LABEL={answer}", "truth": truth,
                     "note": f"note {i}"})  # fmt: skip
        second = answer if not 3 <= i <= 8 else ("cat" if answer != "cat" else "bird")
        other.append({"id": f"r{i:02d}", "prompt": f"Row {i}, again LABEL={second}"})
    outdirs = []
    for name, data in (("a", rows), ("b", other)):
        source = write_jsonl(tmp_path / f"{name}.jsonl", data)
        outdir = tmp_path / name
        args = ["-i", str(source), "-o", str(outdir), "--choices", CHOICES, "--quiet"]
        run_against(server, *args, "--max-retries", "0", "--no-report", expect=None)
        outdirs.append(outdir)
    return outdirs[0], outdirs[1], rows


def test_review_picks_wrong_different_and_invalid_rows_with_why(server, tmp_path) -> None:
    """Rows wrong against gold and different in the other run come first (both reasons),
    then either one (among equals, in the order they were answered); the invalid answer is
    picked with its message; rows with no reason are not picked; each row carries the
    input's columns."""
    a, b, rows = two_runs(server, tmp_path)
    out = tmp_path / "review.csv"
    proc = run_zbatch(
        "review", str(a), "--gold", "truth", "--against", str(b), "-n", "100", "-o", str(out),
        env=zbatch_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        picked = list(csv.DictReader(handle))
    by_id = {row["id"]: row for row in picked}
    # r00-r05 wrong against gold; r03-r08 differ from b (r06 has no label: invalid instead).
    assert sorted(by_id) == [f"r{i:02d}" for i in range(9)]
    assert sorted(row["id"] for row in picked[:3]) == ["r03", "r04", "r05"]  # two reasons each
    for i in range(6):
        assert "gold says" in by_id[f"r{i:02d}"]["why"]
    for i in (3, 4, 5, 7, 8):
        assert f"{b} says" in by_id[f"r{i:02d}"]["why"]
    assert by_id["r06"]["why"].startswith("invalid_label: ")
    assert by_id["r06"]["error_type"] == "invalid_label"
    assert by_id["r06"]["answer"] == "banana"  # the paid answer, for the reviewer
    source = {row["id"]: row for row in rows}
    for row in picked:
        assert row["note"] == source[row["id"]]["note"]  # the input's columns
        assert row["prompt"] == source[row["id"]]["prompt"]
        if row["label"]:
            assert f"LABEL={row['label']}" in row["prompt"]  # the answer to its own prompt
    assert "wrote 9 of 9 rows worth a look" in proc.stdout


def test_review_n_keeps_the_highest_scores(server, tmp_path) -> None:
    """-n 3 keeps the three rows with two reasons."""
    a, b, _ = two_runs(server, tmp_path)
    out = tmp_path / "review.jsonl"
    args = ["review", str(a), "--gold", "truth", "--against", str(b), "-n", "3", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    picked = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["id"] for row in picked) == ["r03", "r04", "r05"]
    assert all(row["score"] == 5.0 for row in picked)


def test_label_studio_tasks_hold_the_models_label_as_a_prediction(server, tmp_path) -> None:
    """--format label-studio: a JSON list of tasks, each with the row as `data` (id as
    zbatch_id) and the model's label as a `choices` prediction; an invalid answer has none."""
    a, _, _ = two_runs(server, tmp_path)
    out = tmp_path / "tasks.json"
    args = ["review", str(a), "--gold", "truth", "-o", str(out), "--format", "label-studio"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    assert len(tasks) == 7
    for task in tasks:
        data = task["data"]
        assert data["zbatch_id"].startswith("r") and data["why"]
        if data["label"] is None:
            assert task["predictions"] == [] and data["error_type"] == "invalid_label"
            continue
        (prediction,) = task["predictions"]
        assert prediction["result"] == [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [data["label"]]},
            }
        ]


def test_review_picks_split_samples(server, tmp_path) -> None:
    """With samples = K (votes and agreement columns), rows whose answers split are picked,
    the least agreed first."""
    a, _, _ = two_runs(server, tmp_path)
    part = next((a / "results").glob("part-*.parquet"))
    table = pq.read_table(part)
    ids = table.column("id").to_pylist()
    agreement = [0.4 if i == "r20" else 0.6 if i == "r21" else 1.0 for i in ids]
    votes = [["cat", "dog", "bird", "cat", "dog"] if a < 1 else ["cat"] * 5 for a in agreement]
    table = table.append_column("votes", pa.array(votes)).append_column(
        "agreement", pa.array(agreement)
    )
    pq.write_table(table, part)
    out = tmp_path / "review.jsonl"
    assert CliRunner().invoke(cli, ["review", str(a), "-o", str(out)]).exit_code == 0
    picked = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in picked if "samples split" in row["why"]] == ["r20", "r21"]
    assert picked[0]["why"] == "invalid_label: " + picked[0]["why"].split(": ", 1)[1]


def test_review_refuses_a_file_name_it_cannot_write(tmp_path, server) -> None:
    """An output that is neither .csv nor .jsonl (without --format) is exit 2, one line."""
    a, _, _ = two_runs(server, tmp_path)
    proc = run_zbatch("review", str(a), "-o", str(tmp_path / "x.txt"), env=zbatch_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: cannot write the review to {tmp_path / 'x.txt'}: use a .csv or .jsonl file "
        "name, or --format label-studio"
    ]


@pytest.mark.parametrize("command", [["report", "-o", "page.html"], ["run"]])
def test_without_plotly_the_page_is_one_clear_line_and_a_run_is_unaffected(
    tmp_path, monkeypatch, command
) -> None:
    """Without zbatch[report]: `report -o` says what to install (exit 2); a run ends as
    always, with no report.html."""
    import zbatch.results.page

    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "yes or no?"}])
    outdir = tmp_path / "out"
    runner = CliRunner()
    run = ["run", "-i", str(source), "-o", str(outdir), "--choices", "yes,no", "--simulate"]
    monkeypatch.setitem(__import__("sys").modules, "plotly", None)  # not importable
    zbatch.results.page.plotly_js_path.cache_clear()
    try:
        assert runner.invoke(cli, [*run, "-q"]).exit_code == 0
        assert not (tmp_path / "out.simulated" / "report.html").exists()
        if command[0] == "report":
            result = runner.invoke(cli, ["report", str(tmp_path / "out.simulated"), "-o",
                                         str(tmp_path / "page.html")])  # fmt: skip
            assert result.exit_code == 2
            assert result.output.strip().splitlines()[-1] == (
                'Error: the HTML report needs plotly: pip install "zbatch[report]"'
            )
    finally:
        zbatch.results.page.plotly_js_path.cache_clear()
