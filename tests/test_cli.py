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
from zbatch.job.file import load_job


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
    actions = {
        "job_file",
        "dry_run",
        "force",
        "retry_failed",
        "limit",
        "shard",
        "cluster",
        "quiet",
        "no_wait",
        "as_json",
    }
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
    """--simulate runs the whole pipeline with no key and leaves labelled Parquet results, in
    OUTDIR.simulated: never in the OUTDIR a real run uses."""
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(40))
    out = tmp_path / "out"
    args = ["run", "-i", str(source), "-o", str(out), "--simulate", "--choices", "yes,no", "-q"]
    result = CliRunner().invoke(cli, args, env={"ZAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert not out.exists()
    summary = json.loads((tmp_path / "out.simulated" / "summary.json").read_text())
    assert summary["rows"]["ok"] == 40
    assert sum(summary["labels"].values()) == 40
    assert set(summary["labels"]) <= {"yes", "no"}


def test_a_real_run_refuses_simulated_answers_and_a_rehearsal_never_writes_into_a_real_outdir(
    tmp_path: Path,
) -> None:
    """Simulated answers never pass for real ones: mixing them is refused with one clear line,
    exit 2, and nothing is sent or written."""
    source = write_jsonl(tmp_path / "in.jsonl", prompt_rows(5))
    simulated = tmp_path / "out.simulated"
    runner = CliRunner()
    base = ["run", "-i", str(source), "-q"]
    assert runner.invoke(cli, [*base, "-o", str(simulated), "--simulate"]).exit_code == 0
    parts = sorted((simulated / "results").iterdir())
    real = runner.invoke(cli, [*base, "-o", str(simulated), "--base-url", "http://127.0.0.1:9/v4"])
    assert real.exit_code == 2
    assert f"Error: {simulated} holds simulated answers, and a real run never mixes with them." in (
        real.output
    )
    assert sorted((simulated / "results").iterdir()) == parts
    real_out = tmp_path / "real"
    (real_out / "results").mkdir(parents=True)
    (real_out / "job.json").write_text(json.dumps({"fingerprint": "x", "settings": {}}))
    mixed = runner.invoke(cli, [*base, "-o", str(real_out) + ".simulated", "--simulate"])
    assert mixed.exit_code == 0  # a rehearsal goes beside it, into real.simulated
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl",
        "out.simulated",
        "real",
        "real.simulated",
    ]


ONE_ROW = '{"id": "a", "prompt": "hi"}\n'


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--temperature", "5"],
            2,
            "Error: the command line: request.temperature must be between 0 and 2, not 5.0",
        ),
        (
            ["--max-tokens", "0"],
            2,
            "Error: the command line: request.max_tokens must be at least 1, not 0",
        ),
        (
            ["--base-url", "api.z.ai/api/paas/v4"],
            2,
            "Error: the command line: endpoint.base_url must be an http:// or https:// URL, "
            "not 'api.z.ai/api/paas/v4'",
        ),
        (  # an empty $VAR in `--base-url $VAR --retry-failed`
            ["--base-url", "--retry-failed"],
            2,
            "endpoint.base_url must be an http:// or https:// URL, not '--retry-failed'",
        ),
        (
            ["--base-url", "https://user:secret@example.test/v1"],
            2,
            "Error: the command line: endpoint.base_url must not hold credentials",
        ),
        (["--rpm", "nan"], 2, "Error: the command line: limits.rpm must be a number, not nan"),
        (
            ["--timeout", "inf"],
            2,
            "Error: the command line: endpoint.timeout must be a finite number, not inf",
        ),
        (
            ["--template", "Say {text"],
            2,
            "Error: the command line: request.template cannot be read",
        ),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_setting_and_exit_2(tmp_path, args, code, message):
    (tmp_path / "in.jsonl").write_text(ONE_ROW)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(out), *args]
    )
    assert result.exit_code == code
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "secret" not in result.output
    assert not out.exists()


def test_a_typo_inside_prices_is_refused_naming_the_key(tmp_path):
    (tmp_path / "in.jsonl").write_text(ONE_ROW)
    job = tmp_path / "j.toml"
    job.write_text(
        '[input]\npath = "in.jsonl"\n[output]\ndir = "o"\n[prices]\n"glm-4.6" = { inptu = 5.0 }\n'
    )
    result = CliRunner().invoke(cli, ["validate", str(job)])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {job}: prices.glm-4.6: unknown key 'inptu' (known: input, cached, output)\n"
    )


def test_an_outdir_that_is_a_file_is_one_line_and_exit_74(tmp_path):
    (tmp_path / "in.jsonl").write_text(ONE_ROW)
    (tmp_path / "taken").write_text("not a folder")
    args = ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "taken")]
    result = CliRunner().invoke(cli, [*args, "--base-url", "http://127.0.0.1:9/v4"])
    assert result.exit_code == 74
    assert result.output == (
        f"Error: the output directory {tmp_path / 'taken'} is a file: "
        "choose another output directory\n"
    )
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_compact_and_export_on_a_folder_that_is_not_an_outdir_exit_2_and_leave_it_alone(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    compact = CliRunner().invoke(cli, ["compact", str(folder)])
    assert (compact.exit_code, compact.output) == (
        2,
        f"Error: {folder} is not a zbatch output directory (no job.json)\n",
    )
    export = CliRunner().invoke(cli, ["export", str(folder), "-o", str(tmp_path / "x.csv")])
    assert export.exit_code == 2
    assert list(folder.iterdir()) == []


def test_an_outdir_that_cannot_be_written_is_one_line_and_exit_74(tmp_path):
    """sysfs refuses new folders even to root: a real kernel refusal (EPERM), as a read-only
    file system gives EROFS."""
    (tmp_path / "in.jsonl").write_text(ONE_ROW)
    outdir = Path("/sys/zbatch-cannot-write-here")
    args = ["run", "-i", str(tmp_path / "in.jsonl"), "-o", str(outdir), "--simulate"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 74
    assert result.output.startswith(f"Error: could not write {outdir}.simulated/.lock: ")
    assert result.output.endswith(
        "Parts committed earlier are intact; make it writable or choose another location, "
        "then run the same command to resume\n"
    )
    assert len(result.output.splitlines()) == 1
