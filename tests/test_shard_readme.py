"""The README's Kubernetes Indexed Job and Slurm array, run here with the variables their
schedulers set: the same command, in the same folder layout, against the loopback server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ZBATCH, outcome_ids, prompt_rows, write_jsonl, zbatch_env
from zai_server import ZaiServer

ROOT = Path(__file__).resolve().parent.parent


def section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## More than one machine\n", 1)[1].split("\n## ", 1)[0]


def block(language: str, marker: str) -> str:
    """The README code block of ``language`` that holds ``marker``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", section(), flags=re.DOTALL)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"one {language} block with {marker!r} expected"
    return found[0]


def yaml_value(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}: ([^#\n]*?)\s*(#.*)?$", text, flags=re.MULTILINE)
    assert match, f"no {key} in the manifest"
    return match.group(1)


def job_folder(folder: Path, base_url: str, rows: int) -> list[str]:
    """What the manifest's workingDir and the Slurm submit folder hold: job.toml and its
    input, with OUTDIR next to them. Returns the ids."""
    data = prompt_rows(rows)
    write_jsonl(folder / "reviews.jsonl", data)
    (folder / "job.toml").write_text(
        '[input]\npath = "reviews.jsonl"\n\n'
        f'[endpoint]\nbase_url = "{base_url}"\n\n'
        "[limits]\nconcurrency = 4\n\n"
        '[output]\ndir = "out"\n',
        encoding="utf-8",
    )
    return [row["id"] for row in data]


def check_every_shard_ran(folder: Path, ids: list[str], shards: int) -> None:
    results, errors = outcome_ids(folder / "out")
    assert sorted(results) == sorted(ids)
    assert errors == []
    names = [p.name for p in (folder / "out" / "results").glob("*.parquet")]
    for k in range(shards):
        assert any(f"-{k}of{shards}-" in name for name in names), names


def run_all(commands: list[tuple[list[str], dict[str, str], Path]]) -> None:
    """Start every task at once, as the scheduler would, and wait for all."""
    procs = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
        for cmd, env, cwd in commands
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err


def test_kubernetes_indexed_job_as_in_the_readme(tmp_path: Path) -> None:
    """Each of the manifest's `completions` pods runs its `command` in its `workingDir` with
    JOB_COMPLETION_INDEX set; together they label every row exactly once."""
    manifest = block("yaml", "completionMode: Indexed")
    assert yaml_value(manifest, "completionMode") == "Indexed"
    completions = int(yaml_value(manifest, "completions"))
    assert int(yaml_value(manifest, "parallelism")) == completions
    command = json.loads(yaml_value(manifest, "command"))
    assert command[0] == "zbatch"
    assert command[-2:] == ["--shard", f"auto/{completions}"]
    working_dir = tmp_path / yaml_value(manifest, "workingDir").lstrip("/")
    working_dir.mkdir(parents=True)
    with ZaiServer(latency=0.02) as server:
        ids = job_folder(working_dir, server.base_url, 200)
        run_all(
            [
                ([ZBATCH, *command[1:]], zbatch_env(JOB_COMPLETION_INDEX=str(k)), working_dir)
                for k in range(completions)
            ]
        )
        assert server.stats()["successes"] == len(ids)
    check_every_shard_ran(working_dir, ids, completions)


@pytest.mark.parametrize("array_start", [0, 1])
def test_slurm_array_as_in_the_readme(tmp_path: Path, array_start: int) -> None:
    """The script runs with bash once per array task, with the variables Slurm sets; an array
    numbered from 1 (`--array=1-4`) gives the same shards."""
    script = block("bash", "#SBATCH --array=")
    first, last = map(int, re.search(r"#SBATCH --array=(\d+)-(\d+)", script).groups())  # type: ignore[union-attr]
    assert first == 0
    tasks = last - first + 1
    assert f"--shard auto/{tasks}" in script
    path = tmp_path / "label.sbatch"
    path.write_text(script, encoding="utf-8")
    submit = tmp_path / "reviews"
    submit.mkdir()
    bin_dir = str(Path(ZBATCH).parent)
    with ZaiServer(latency=0.02) as server:
        ids = job_folder(submit, server.base_url, 200)
        commands = []
        for task in range(array_start, array_start + tasks):
            env = zbatch_env(
                SLURM_ARRAY_TASK_ID=str(task),
                SLURM_ARRAY_TASK_MIN=str(array_start),
                SLURM_SUBMIT_DIR=str(submit),
                PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
            )
            commands.append((["bash", str(path)], env, tmp_path))
        run_all(commands)
        assert server.stats()["successes"] == len(ids)
    check_every_shard_ran(submit, ids, tasks)
