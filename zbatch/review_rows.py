"""`zbatch review`: the rows of an OUTDIR most worth a human look, with why each was picked.

A row is picked for what a labelling team checks first: a label that differs from the gold
label, a label another run (another prompt or model) gave differently, samples that did not
agree (``samples = K``), and answers that failed their check (``invalid_output``,
``invalid_label``, ``invalid_json``: the paid answer is shown). Each reason adds to a row's
score; the rows with the highest scores come first (input order among equals), with the
input's columns, written as CSV, JSONL or Label Studio's import JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import prompt
from .errors import JobError
from .quality import gold_field, label_fields, normalised, read_gold
from .results import final_outcomes
from .source import open_input
from .store import RESULTS, OutputDir, open_storage

INVALID = ("invalid_output", "invalid_label", "invalid_json")
FORMATS = ("csv", "jsonl", "label-studio")
# How much each reason adds to a row's score.
WRONG, DIFFERENT, INVALID_ANSWER = 3.0, 2.0, 2.0
SPLIT = 2.0  # times (1 - agreement)


@dataclass
class Pick:
    """One row picked for review: its figures, and the reasons."""

    id: str
    place: int  # in the outcomes' order (input order)
    score: float = 0.0
    why: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reviewed:
    """What ``review`` wrote."""

    rows: int
    candidates: int  # rows with at least one reason
    reasons: dict[str, int]  # reason kind -> rows
    path: str


def review(
    outdir: OutputDir,
    target: str,
    *,
    gold: str | None = None,
    against: OutputDir | None = None,
    limit: int = 100,
    format: str | None = None,
) -> Reviewed:
    """Pick up to ``limit`` rows and write them to ``target`` (.csv, .jsonl, or Label Studio
    JSON with ``format="label-studio"``)."""
    kind = format or _format_of(target)
    if kind not in FORMATS:
        raise JobError(f"--format {kind}: use one of {', '.join(FORMATS)}")
    settings = outdir.read_job()["settings"]
    fields = label_fields(settings, outdir.parts(RESULTS).schema)
    gold = gold or settings.get("gold_column")
    golds = {}
    scored = gold_field(fields, gold)
    if gold is not None and scored is not None:
        table = read_gold(settings, gold)
        values = normalised(table.column("gold"), fields[scored]).to_pylist()
        golds[scored] = dict(zip(table.column("id").to_pylist(), values, strict=True))
    others = _other_labels(against, list(fields)) if against is not None else {}
    reasons: dict[str, int] = {}
    picks = []
    for pick in _candidates(outdir, list(fields), golds, others, against):
        for reason in pick.values.pop("_kinds"):
            reasons[reason] = reasons.get(reason, 0) + 1
        picks.append(pick)
    picks.sort(key=lambda p: (-p.score, p.place))
    chosen = picks[:limit]
    rows = _with_input(settings, chosen)
    folder, _, name = target.rstrip("/").rpartition("/")
    write = {"csv": _csv, "jsonl": _jsonl, "label-studio": _label_studio(list(fields))}[kind]
    if name == "":
        raise JobError(f"cannot write the review to {target}: name a file")
    open_storage(folder if "/" in target else ".").write_file(
        name, lambda handle: write(rows, handle), outdir=False
    )
    return Reviewed(len(rows), len(picks), reasons, target)


def _format_of(target: str) -> str:
    suffix = Path(target).suffix.lower()
    if suffix in (".csv", ".jsonl"):
        return suffix[1:]
    raise JobError(
        f"cannot write the review to {target}: use a .csv or .jsonl file name, "
        "or --format label-studio"
    )


def _other_labels(against: OutputDir, fields: list[str]) -> dict[str, dict[str, str]]:
    against.read_job()  # a folder that is not an OUTDIR is refused, naming it
    parts = against.parts(RESULTS)
    names = [name for name in fields if name in parts.schema.names]
    found: dict[str, dict[str, str]] = {name: {} for name in names}
    if not parts.names:
        return found
    for batch in parts.batches(["id", *names]):
        ids = batch.column("id").to_pylist()
        for name in names:
            found[name].update(
                (i, v) for i, v in zip(ids, batch.column(name).to_pylist(), strict=True) if v
            )
    return found


def _candidates(
    outdir: OutputDir,
    fields: list[str],
    golds: Mapping[str, Mapping[str, str]],
    others: Mapping[str, Mapping[str, str]],
    against: OutputDir | None,
) -> Iterator[Pick]:
    """Every final outcome with at least one reason to look at it."""
    try:
        outcomes = final_outcomes(outdir)
    except JobError:  # nothing committed yet: nothing to review
        return
    wanted = [
        "id", "status", "model", "content", "error_type", "message", "answer",
        "agreement", "votes", *fields,
    ]  # fmt: skip
    columns = [name for name in wanted if name in outcomes.schema.names]
    place = 0
    other_name = "" if against is None else against.location
    for batch in outcomes.batches:
        for row in batch.select(columns).to_pylist():
            place += 1
            pick = Pick(row["id"], place)
            kinds = []
            for name in fields:
                answer = row.get(name)
                truth = golds.get(name, {}).get(row["id"])
                if answer is not None and truth is not None and answer != truth:
                    pick.score += WRONG
                    pick.why.append(f"{name} {answer!r}, gold says {truth!r}")
                    kinds.append("wrong")
                other = others.get(name, {}).get(row["id"])
                if answer is not None and other is not None and answer != other:
                    pick.score += DIFFERENT
                    pick.why.append(f"{name} {answer!r}, {other_name} says {other!r}")
                    kinds.append("different")
            agreement = row.get("agreement")
            if agreement is not None and agreement < 1:
                pick.score += SPLIT * (1 - agreement)
                votes = ", ".join(map(str, row.get("votes") or []))
                pick.why.append(f"samples split: agreement {agreement:.2f} ({votes})")
                kinds.append("split")
            if row.get("error_type") in INVALID:
                pick.score += INVALID_ANSWER
                pick.why.append(f"{row['error_type']}: {row.get('message') or ''}".strip())
                kinds.append("invalid")
            if not pick.why:
                continue
            pick.values = {
                "why": "; ".join(pick.why),
                "score": round(pick.score, 3),
                **{name: row.get(name) for name in fields},
                "reviewed": None,  # for the reviewer's label (README "Label a dataset")
            }
            if golds:
                pick.values["gold"] = next(iter(golds.values())).get(row["id"])
            if others:
                pick.values["other"] = next(
                    (others[n].get(row["id"]) for n in fields if n in others), None
                )
            if "agreement" in columns:
                pick.values["agreement"] = agreement
                pick.values["votes"] = row.get("votes")
            pick.values["error_type"] = row.get("error_type")
            pick.values["answer"] = row.get("answer") or row.get("content")
            pick.values["model"] = row.get("model")
            pick.values["_kinds"] = sorted(set(kinds))
            yield pick


def _with_input(settings: Mapping[str, Any], picks: Sequence[Pick]) -> list[dict[str, Any]]:
    """The picked rows, in order, each with its input row's columns after its own (an input
    column whose name is taken is prefixed ``input_``)."""
    wanted = {pick.id: pick for pick in picks}
    inputs: dict[str, dict[str, Any]] = {}
    try:
        for raw in open_input(settings["input_path"]).rows():
            if raw.data is None:
                continue
            row_id = prompt.row_id(raw.data, settings.get("id_column"))
            if row_id in wanted and row_id not in inputs:
                inputs[row_id] = raw.data
    except JobError:
        pass  # the input moved away: the rows without its columns
    rows = []
    for pick in picks:
        row: dict[str, Any] = {"id": pick.id, **pick.values}
        for name, value in inputs.get(pick.id, {}).items():
            if name != settings.get("id_column", "id") and name != "id":
                row[f"input_{name}" if name in row else name] = value
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]], handle: BinaryIO) -> None:
    names = list(dict.fromkeys(name for row in rows for name in row)) or ["id", "why"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        )
    handle.write(text.getvalue().encode("utf-8"))


def _jsonl(rows: list[dict[str, Any]], handle: BinaryIO) -> None:
    for row in rows:
        handle.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def _label_studio(fields: list[str]) -> Any:
    """Label Studio's import JSON: one task per row, its columns as ``data`` (the row's id
    as ``zbatch_id``), the model's labels as a prediction of ``choices`` results whose
    ``from_name`` is the label column and ``to_name`` is ``text`` (README "Review")."""

    def write(rows: list[dict[str, Any]], handle: BinaryIO) -> None:
        tasks = []
        for row in rows:
            data = {("zbatch_id" if k == "id" else k): v for k, v in row.items()}
            del data["reviewed"]  # Label Studio keeps the reviewer's label itself
            result = [
                {
                    "from_name": name,
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": [row[name]]},
                }
                for name in fields
                if row.get(name) is not None
            ]
            prediction = {"model_version": row.get("model") or "zbatch", "result": result}
            if row.get("agreement") is not None:
                prediction["score"] = row["agreement"]
            tasks.append({"data": data, "predictions": [prediction] if result else []})
        handle.write(json.dumps(tasks, ensure_ascii=False, indent=1, default=str).encode())

    return write
