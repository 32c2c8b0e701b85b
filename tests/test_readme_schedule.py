"""README "Running it on a schedule" documents every monitoring flag and setting as `zbatch run
--help` and the job file know them, and its YAML examples parse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from zbatch.cli import cli
from zbatch.job.file import SECTIONS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Running it on a schedule\n", 1)[1].split("\n## ", 1)[0]
MONITORING = ("metrics_file", "pushgateway", "metrics_every", "ping", "log_format")


@pytest.mark.parametrize("setting", MONITORING)
def test_each_monitoring_setting_is_a_flag_a_job_file_key_and_documented(setting: str) -> None:
    flag = "--" + setting.replace("_", "-")
    help_text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    assert flag in help_text
    assert SECTIONS["run"][setting] == setting
    assert f"`{flag}" in SECTION and f"`{setting}`" in SECTION
    job_file = README.split("## The job file", 1)[1].split("\n## ", 1)[0]
    assert re.search(rf"^# {setting} = ", job_file, re.MULTILINE)


def test_every_metric_zbatch_writes_is_in_the_readme_table() -> None:
    from zbatch.ops.metrics import Snapshot, _Families
    from zbatch.stats import Stats

    snapshot = Snapshot.of(Stats(max_cost=1.0, spent=0.5), started_at=1.0, last_success=2.0,
                           exit_code=0)  # fmt: skip
    names = {family.name for family in _Families(snapshot, {}).collect()}
    documented = set(re.findall(r"`(zbatch_[a-z_]+)", SECTION))
    for name in names:
        family = {f"{name}_total", f"{name}_info", name}
        assert family & documented, name


def test_the_yaml_examples_parse_and_the_alerts_cover_what_the_issue_asks() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the test extra's moto
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", SECTION, re.S)]
    kinds = [block.get("kind") for block in blocks]
    assert kinds.count("CronJob") == 1
    # the shards' monitoring: the Indexed Job's command (README "More than one machine") with
    # the push flags, each pod its own group
    (command,) = [block["command"] for block in blocks if "command" in block]
    assert command[:6] == ["zbatch", "run", "job.toml", "--shard", "auto/4", "--log-format"]
    assert "--pushgateway" in command
    (rules,) = [block for block in blocks if "groups" in block]
    exprs = " ".join(rule["expr"] for rule in rules["groups"][0]["rules"])
    assert "26 * 3600" in exprs and "zbatch_exit_code) != 0" in exprs
    assert "zbatch_spent_usd" in exprs and "zbatch_budget_usd" in exprs
