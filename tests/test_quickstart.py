"""The README's Quick Start, command by command, as a newcomer runs it on a fresh clone.

The rehearsal (--simulate) must leave the real output directory alone, so the real run that
follows sends rows from the start; here "real" is the loopback Z.AI server, reached through the
same environment variables a user sets (ZAI_BASE_URL, ZAI_API_KEY).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path

from conftest import TEST_KEY, outcome_ids, read_table, run_zbatch, zbatch_env
from zai_server import word_for

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = "sample_data/reviews.jsonl"


def quick_start_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0].split("\n### ")[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("zbatch "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_quick_start_in_order_rehearses_apart_then_sends_every_row_for_real(tmp_path, server):
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    # The "real" endpoint answers each review with a sentiment word, chosen by its prompt.
    server.configure(answer="positive|negative|neutral")
    env = zbatch_env(ZAI_BASE_URL=server.base_url, ZAI_API_KEY=TEST_KEY)
    commands = quick_start_commands()
    assert [c[:2] for c in commands] == [
        ["run", "jobs/sentiment.toml"],
        ["status", "out/sentiment.simulated"],
        ["errors", "out/sentiment.simulated"],
        ["logs", "out/sentiment.simulated"],
        ["export", "out/sentiment.simulated"],
        ["run", "jobs/sentiment.toml"],
        ["status", "out/sentiment-batch.simulated"],
        ["validate", "jobs/sentiment.toml"],
        ["run", "jobs/sentiment.toml"],
    ]
    outputs, errors_out = [], []
    for args in commands:
        proc = run_zbatch(*args, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, f"zbatch {shlex.join(args)}: {proc.stderr}"
        assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
        outputs.append(proc.stdout)
        errors_out.append(proc.stderr)
    assert "simulated" in outputs[1] and "simulated" in outputs[4]  # status, export say so
    assert outputs[2] == "no failed rows in out/sentiment.simulated\n"  # errors: none
    assert "end: finished, ok 300" in outputs[3]  # logs: the rehearsal's run.log
    export = commands[4][commands[4].index("-o") + 1]
    assert export.startswith("out/") and "out/" in (ROOT / ".gitignore").read_text().split()
    assert (tmp_path / export).is_file()
    # The batch rehearsal went through a batch: uploaded, created, polled, collected.
    for step in ("batch file 00001: 300 rows", "in_progress", "collected: 300 rows answered"):
        assert step in errors_out[5], errors_out[5]
    assert "batch 00001" in outputs[6] and "completed" in outputs[6]
    answered = server.stats()["answered_prompts"]
    assert len(answered) == len(set(answered)) == 300  # every row sent, once: none taken for
    # done because the rehearsal had answered it
    real, simulated = tmp_path / "out/sentiment", tmp_path / "out/sentiment.simulated"
    results, errors = outcome_ids(real)
    rehearsed = read_table(simulated / "results").column("id").to_pylist()
    assert sorted(results) == sorted(rehearsed) and errors == []
    lines = (ROOT / REVIEWS).read_text(encoding="utf-8").splitlines()
    reviews = {row["id"]: row for row in map(json.loads, lines)}
    template = tomllib.loads((ROOT / "jobs/sentiment.toml").read_text())["request"]["template"]
    for row in read_table(real / "results").to_pylist():
        word = word_for("positive|negative|neutral", template.format_map(reviews[row["id"]]))
        assert (row["content"], row["label"]) == (word, word)  # the answer to its own prompt
        assert not row["model"].endswith("-simulated")
