"""Progress from the Python API in a Jupyter notebook: a real kernel (ipykernel, driven by
nbclient) runs `await zbatch.arun(job)` and `zbatch.run(job)` in cells; the cells' outputs hold
tqdm.auto's bar (an ipywidgets progress widget) with the run's figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import prompt_rows, write_jsonl

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

WIDGET = "application/vnd.jupyter.widget-view+json"


def run_cells(tmp_path: Path, *cells: str) -> tuple[list[list[dict]], dict[str, dict]]:
    """Each cell's outputs, and the final state of every widget (by model id)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    saved = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    states = {model_id: model["state"] for model_id, model in saved["state"].items()}
    return [cell["outputs"] for cell in notebook.cells], states


def bar_text(states: dict[str, dict], box_id: str) -> str:
    """What a tqdm.notebook bar shows at the end: its box's label, bar and figures."""
    children = [states[child.removeprefix("IPY_MODEL_")] for child in states[box_id]["children"]]
    parts = []
    for child in children:
        if child.get("_model_name") == "FloatProgressModel":
            parts.append(f"bar {child['value']:g}/{child['max']:g}")
        else:
            parts.append(str(child.get("value", "")))
    return " | ".join(parts).replace("\u2007", " ")  # tqdm pads with figure spaces


def texts(outputs: list[dict]) -> str:
    parts = []
    for output in outputs:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def test_a_notebook_run_shows_a_tqdm_auto_bar_and_a_script_hook_gets_the_figures(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", prompt_rows(20))
    setup = (
        "import zbatch\n"
        "job = zbatch.Job(input_path='in.jsonl', output_dir='out', simulate=True,\n"
        "                 simulate_rate_limited=0, simulate_server_error=0)"
    )
    awaited = "result = await zbatch.arun(job)\nprint('exit', result.exit_code, result.stats.ok)"
    blocking = (
        "again = zbatch.run(job, progress=None)\n"
        "print('exit', again.exit_code, again.stats.skipped)"
    )
    hooked = (
        "class Seen:\n"
        "    interval = 0.05\n"
        "    def __init__(self): self.closed = None\n"
        "    def refresh(self, stats): pass\n"
        "    def close(self, stats): self.closed = (stats.ok, stats.skipped)\n"
        "seen = Seen()\n"
        "zbatch.run(job, progress=seen)\n"
        "print('hook', seen.closed)"
    )
    outputs, states = run_cells(tmp_path, setup, awaited, blocking, hooked)
    bars = []
    for cell in (outputs[1], outputs[2]):
        widgets = [o for o in cell if o["output_type"] == "display_data" and WIDGET in o["data"]]
        assert len(widgets) == 1, cell  # one bar per run, drawn by tqdm.notebook
        bars.append(bar_text(states, widgets[0]["data"][WIDGET]["model_id"]))
    assert "exit 0 20" in texts(outputs[1])
    assert bars[0].startswith("100% | ") and " 20/20 [" in bars[0], bars[0]
    assert "ok=20, failed=0" in bars[0], bars[0]
    assert "exit 0 20" in texts(outputs[2])  # the resumed run skipped every row
    assert bars[1].startswith("100% | ") and " 20/20 [" in bars[1], bars[1]
    assert "hook (0, 20)" in texts(outputs[3])
    assert not [o for o in outputs[3] if o["output_type"] == "display_data"]  # hook: no bar
