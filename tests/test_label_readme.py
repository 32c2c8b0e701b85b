"""The README's "Label a dataset" section, block by block, as written (in a copy of jobs/ and
sample_data/): sample, report against gold, the edited prompt on the same sample, compare,
the full run, the page, the review list, and the reviewed labels joined back as gold."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import run_zbatch, zbatch_env

ROOT = Path(__file__).resolve().parent.parent


def blocks() -> list[tuple[str, str]]:
    """(language, code) of the section's bash and python blocks, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Label a dataset\n", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # the reference subsections follow
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.DOTALL)


def commands(code: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in code.splitlines() if line.startswith("zbatch ")]


def accuracy(text: str) -> tuple[int, int]:
    """(agreed, rows) of the first accuracy line of a text report."""
    found = re.search(r"accuracy [\d.]+% \((\d+) of (\d+)\)", text)
    assert found, text
    return int(found.group(1)), int(found.group(2))


def test_the_label_a_dataset_section_runs_as_written(tmp_path: Path) -> None:
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    found = blocks()
    assert [language for language, _ in found] == ["bash", "bash", "bash", "python", "bash"]
    env = zbatch_env()
    outputs: list[str] = []
    for language, code in found:
        if language == "python":
            # The reviewer's work: every picked row gets the model's label as reviewed.
            path = tmp_path / "review.csv"
            with path.open(newline="", encoding="utf-8") as handle:
                picked = list(csv.DictReader(handle))
            for row in picked:
                row["reviewed"] = row["label"]
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(picked[0]))
                writer.writeheader()
                writer.writerows(picked)
            proc = subprocess.run(
                [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            continue
        for args in commands(code):
            proc = run_zbatch(*args, env=env, cwd=tmp_path, timeout=300)
            assert proc.returncode == 0, f"zbatch {shlex.join(args)}: {proc.stderr}"
            if args[0] != "run":
                outputs.append(proc.stdout)
    sample, compared, page, review, rereported = outputs
    assert accuracy(sample)[1] == 50  # the sample, scored against gold
    assert "label against out/triage.simulated:" in compared
    assert accuracy(compared)[1] == 50
    assert "done             300" in page
    assert (tmp_path / "triage-report.html").stat().st_size > 1_000_000
    assert "rows worth a look to review.csv" in review
    # Reviewed labels joined back: the picked rows now agree with their gold label, the others
    # keep the old one, so the accuracy against `reviewed` is the old one plus the picked rows
    # that were wrong against gold.
    rows = [json.loads(line) for line in (tmp_path / REVIEWED).read_text().splitlines()]
    with (tmp_path / "review.csv").open(newline="", encoding="utf-8") as handle:
        picked = list(csv.DictReader(handle))
    assert all(row["reviewed"] for row in rows) and len(rows) == 300
    wrong = sum(1 for row in picked if row["label"] and row["label"] != row["gold"])
    before, total = accuracy(page)
    assert accuracy(rereported) == (before + wrong, total)


REVIEWED = "sample_data/tickets_labelled.jsonl"
