"""The README's "Label a dataset" section, block by block, as written (in a copy of jobs/ and
sample_data/): the offline rehearsal (sample, report against gold, the edited prompt on the same
sample, compare, the full run, the page, the review list, the reviewed labels joined back as
gold), then its part "For real" against the loopback Z.AI server, where what the response cache
saves is checked from the requests the server received."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import read_table, run_zbatch, zbatch_env
from zai_server import ZaiServer, word_for

ROOT = Path(__file__).resolve().parent.parent


REAL = "For real: pay only for what changed\n"


def blocks(part: str = "") -> list[tuple[str, str]]:
    """(language, code) of the bash and python blocks, in order, of the section's opening (the
    offline rehearsal) or of its subsection whose heading starts with ``part``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Label a dataset\n", 1)[1].split("\n## ", 1)[0]
    opening, *subsections = section.split("\n### ")
    text = opening if not part else next(s for s in subsections if s.startswith(part))
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.DOTALL)


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
            elif "--limit" not in args and args[1] == "jobs/triage_v2.toml":
                # The full run continues the sample's OUTDIR: the 50 sampled rows not sent again.
                assert "skipped (done before) 50\n" in one_spaced(proc.stdout), proc.stdout
                assert "rows ok 250\n" in one_spaced(proc.stdout), proc.stdout
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


WORDS = "billing|shipping|account|bug|other"


def one_spaced(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text)


def test_the_real_part_pays_only_for_the_requests_it_has_not_bought(
    tmp_path: Path, server: ZaiServer
) -> None:
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    jobs = {name: tomllib.loads((tmp_path / f"jobs/{name}.toml").read_text()) for name in TRIAGE}
    assert all(job["request"]["temperature"] == 0 for job in jobs.values())  # cached by default
    found = blocks(REAL)
    assert [language for language, _ in found] == ["bash", "bash", "bash"]
    assert found[0][1].startswith("export ZAI_API_KEY=")  # the test's key comes from the env
    steps = [args for _, code in found for args in commands(code)]
    assert [args[:2] for args in steps] == [
        ["run", "jobs/triage.toml"],
        ["run", "jobs/triage_v2.toml"],
        ["report", "out/triage_v2"],
        ["run", "jobs/triage.toml"],
        ["status", "out/triage-again"],
        ["run", "jobs/triage_v2.toml"],
        ["status", "out/triage-full"],
        ["review", "out/triage-full"],
    ]
    server.configure(answer=WORDS)
    env = zbatch_env(ZAI_BASE_URL=server.base_url)
    # The rehearsal first, as a reader does: it sends nothing and puts nothing in the cache.
    rehearsal = commands(blocks()[0][1])[0]
    assert "--simulate" in rehearsal and rehearsal[:2] == ["run", "jobs/triage.toml"]
    proc = run_zbatch(*rehearsal, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and server.stats()["requests"] == 0, proc.stderr
    out, sent = [], []  # each command's stdout and the prompts the server answered during it
    for args in steps:
        before = server.stats()["answered_prompts"]
        proc = run_zbatch(*args, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, f"zbatch {shlex.join(args)}: {proc.stderr}"
        out.append(one_spaced(proc.stdout))
        sent.append(server.stats()["answered_prompts"][len(before) :])
    assert server.stats()["errors_by_code"] == {}
    # Every answer in every OUTDIR is the one its own prompt gets, bought or from the cache.
    lines = (tmp_path / REVIEWED).read_text(encoding="utf-8").splitlines()
    rows = {row["id"]: row for row in map(json.loads, lines)}
    prompt = {
        (name, key): job["request"]["template"].format_map(row)
        for name, job in jobs.items()
        for key, row in rows.items()
    }
    tables = {}
    for outdir, name in OUTDIRS.items():
        tables[outdir] = {r["id"]: r for r in read_table(tmp_path / outdir / "results").to_pylist()}
        for key, row in tables[outdir].items():
            assert row["label"] == word_for(WORDS, prompt[name, key]), (outdir, key)
    sample_a, sample_b = tables["out/triage"], tables["out/triage_v2"]
    # The two samples: 50 requests each, the same rows, every request of the edited prompt new.
    assert len(sent[0]) == len(set(sent[0])) == 50 and len(sent[1]) == len(set(sent[1])) == 50
    assert set(sent[0]) == {prompt["triage", key] for key in sample_a}
    assert set(sent[1]) == {prompt["triage_v2", key] for key in sample_b}
    assert sample_a.keys() == sample_b.keys() and not set(sent[0]) & set(sent[1])
    assert not any(row["cached"] for row in [*sample_a.values(), *sample_b.values()])
    assert "label against out/triage:" in out[2] and accuracy(out[2])[1] == 50
    # The first prompt again, into a new OUTDIR: nothing sent, all 50 from the cache.
    again = tables["out/triage-again"]
    assert sent[3] == [] and again.keys() == sample_a.keys()
    assert all(row["cached"] and row["attempts"] == 0 for row in again.values())
    assert "requests 0\n" in out[3] and "from the cache 50 rows (saved $" in out[3]
    saved = re.findall(r"from the cache 50 rows \(saved (\$[\d.]+)\)", out[3] + out[4])
    assert len(saved) == 2 and saved[0] == saved[1] != "$0.0000"  # the same saving, in status
    assert "spent so far $0.0000" in out[4]
    # The full run: the sampled rows, and every ticket asking what a sampled one asked, come from
    # the cache; the rest are sent, each distinct request once.
    full = tables["out/triage-full"]
    asked = {prompt["triage_v2", key] for key in sample_b}
    from_cache = {key for key, row in full.items() if row["cached"]}
    assert len(full) == 300 and sample_b.keys() <= from_cache
    assert from_cache == {key for key in full if prompt["triage_v2", key] in asked}
    assert len(from_cache) > 50  # the set has tickets identical to a sampled one
    rest = {prompt["triage_v2", key] for key in full.keys() - from_cache}
    assert len(sent[5]) == len(set(sent[5])) and set(sent[5]) == rest
    summary = json.loads((tmp_path / "out/triage-full/summary.json").read_text())
    assert summary["cache"]["hits"] == len(from_cache) and summary["requests"] == len(rest)
    assert f"from the cache {len(from_cache)} rows (saved $" in out[5]
    assert f"from the cache {len(from_cache)} rows (saved $" in out[6]
    assert "rows worth a look to review-real.csv" in out[7]
    assert (tmp_path / "review-real.csv").stat().st_size > 0


TRIAGE = ("triage", "triage_v2")
OUTDIRS = {
    "out/triage": "triage",
    "out/triage_v2": "triage_v2",
    "out/triage-again": "triage",
    "out/triage-full": "triage_v2",
}
