"""The command line as a user meets it: help texts, exact messages, exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import prompt_rows, write_jsonl

from zbatch.cli import cli
from zbatch.job import Job
from zbatch.jobfile import load_job


def _commands() -> list[click.Command]:
    assert isinstance(cli, click.Group)
    return list(cli.commands.values())


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c.name)
def test_every_command_and_option_has_help(command: click.Command) -> None:
    """Every command has a docstring and every option a help text."""
    assert command.help and len(command.help) > 20
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{command.name} {param.opts} has no help text"


def test_every_run_flag_sets_the_job_field_of_its_name() -> None:
    """A flag that landed on no Job field would be silently ignored."""
    run = cli.commands["run"]
    actions = {"job_file", "dry_run", "force", "retry_failed", "quiet"}
    fields = {field.name for field in dataclasses.fields(Job)}
    flags = {param.name for param in run.params} - actions
    assert flags <= fields, flags - fields
    flags = {
        "input_path": "in.jsonl",
        "output_dir": "out",
        "backoff_base": 0.25,
        "backoff_cap": 5.0,
    }
    job = load_job(None, flags)
    assert (job.backoff_base, job.backoff_cap) == (0.25, 5.0)


def test_help_lists_every_command() -> None:
    """`zbatch --help` names all five commands."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "validate", "status", "export", "compact"):
        assert name in result.output


def test_unknown_job_key_is_named(tmp_path: Path) -> None:
    """An unknown key in a job file stops with exit 2 and names the key and its table."""
    job = tmp_path / "job.toml"
    job.write_text('[input]\npath = "in.jsonl"\n[request]\ntemperatur = 0\n')
    result = CliRunner().invoke(cli, ["validate", str(job)])
    assert result.exit_code == 2
    assert "unknown key 'temperatur' in [request]" in result.output


def test_missing_template_field_stops_before_sending(tmp_path: Path) -> None:
    """A template field the input lacks is exit 2 with the column named (dry run too)."""
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    args = ["-i", str(source), "-o", str(tmp_path / "out"), "--template", "Q: {question}"]
    for command in (["validate"], ["run", "--dry-run"], ["run", "--simulate"]):
        result = CliRunner().invoke(cli, [*command, *args])
        assert result.exit_code == 2, result.output
        assert "needs column(s) 'question' that the input lacks" in result.output
    assert not (tmp_path / "out" / "results").exists()


def test_missing_key_for_zai_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    """Without ZAI_API_KEY against Z.AI's URL, the run refuses (exit 2) and suggests --simulate."""
    monkeypatch.delenv("ZAI_API_KEY", raising=False)
    monkeypatch.delenv("ZAI_BASE_URL", raising=False)
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(3))
    result = CliRunner().invoke(cli, ["run", "-i", str(source), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "set the environment variable ZAI_API_KEY" in result.output
    assert "--simulate" in result.output


def test_dry_run_counts_rows_and_shows_first_body(tmp_path: Path) -> None:
    """The dry run prints rows, tokens, cost and the first request body, and writes nothing."""
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(10))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["validate", "-i", str(source), "-o", str(out), "--max-tokens", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "10 in input, 0 already done, 10 to send" in result.output
    assert "<= 50 completion" in result.output
    assert '"content": "Question number 0 about row"' in result.output
    assert "nothing was sent" in result.output
    assert not out.exists()


def test_simulated_run_writes_real_outputs(tmp_path: Path) -> None:
    """--simulate runs the whole pipeline with no key and leaves labelled Parquet results."""
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(40))
    out = tmp_path / "out"
    args = ["run", "-i", str(source), "-o", str(out), "--simulate", "--choices", "yes,no", "-q"]
    result = CliRunner().invoke(cli, args, env={"ZAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"]["ok"] == 40
    assert sum(summary["labels"].values()) == 40
    assert set(summary["labels"]) <= {"yes", "no"}
