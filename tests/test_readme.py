"""The README's Python API examples run as written (in a copy of jobs/ and sample_data/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_api_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


# Runs one example the way its setting would: top-level `await` as a notebook cell does
# (IPython compiles cells with this flag and runs them on its loop).
RUNNER = textwrap.dedent(
    """
    import ast, asyncio, sys
    source = sys.stdin.read()
    code = compile(source, "README example", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, {"__name__": "__main__"})
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    """
)


def test_the_python_api_section_has_a_script_and_a_notebook_example():
    examples = python_api_examples()
    assert len(examples) >= 3
    assert any("await zbatch.arun(" in example for example in examples)
    assert any("zbatch.run(" in example for example in examples)


@pytest.mark.parametrize("index", range(len(python_api_examples())))
def test_each_python_api_example_runs_as_written(tmp_path, index):
    for folder in ("jobs", "sample_data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    example = python_api_examples()[index]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=example,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"example {index} failed:\n{example}\n{proc.stderr}"
    if "limits.concurrency must be greater than 0" in example:
        assert "limits.concurrency must be greater than 0, not -5" in proc.stdout
    if "zbatch.run(job)" in example:
        exit_code, ok = proc.stdout.split()[:2]
        assert (exit_code, int(ok) > 0) == ("0", True)


def command_reference() -> dict[str, str]:
    """README's "Command reference": each command's name -> the text of its subsection."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command reference\n", 1)[1].split("\n## ", 1)[0]
    pieces = re.split(r"^### (.*)$", section, flags=re.MULTILINE)
    documented: dict[str, str] = {}
    for heading, text in zip(pieces[1::2], pieces[2::2], strict=True):
        for name in re.findall(r"`zbatch (\w+)", heading):
            documented[name] = text
    return documented


def test_the_readme_documents_every_command_and_every_flag_help_lists():
    from zbatch.cli.commands import cli

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    reference = command_reference()
    assert set(reference) == set(cli.commands)
    missing = []
    for name, command in cli.commands.items():
        assert f"| `zbatch {name}" in readme, f"zbatch {name} is not in the Commands table"
        # validate takes the job flags, which run's subsection lists
        text = reference[name] + (reference["run"] if name == "validate" else "")
        for param in command.params:
            for flag in (*param.opts, *param.secondary_opts):
                documented = re.search(rf"`{re.escape(flag)}[` ]", text)
                if flag.startswith("--") and flag != "--help" and not documented:
                    missing.append(f"zbatch {name} {flag}")
    assert not missing, f"flags --help lists and README does not document: {missing}"
