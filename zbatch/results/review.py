"""`zbatch review`: the rows of an OUTDIR most worth a human look, with why each was picked.

A row is picked for what a labelling team checks first: a label that differs from the gold
label, a label another run (another prompt or model) gave differently, samples that did not
agree (``samples = K``), and answers that failed their check (``invalid_output``,
``invalid_label``, ``invalid_json``: the paid answer is shown). Each reason adds to a row's
score; the rows with the highest scores come first (in the order they were answered among
equals), with the input's columns, written as CSV, JSONL or Label Studio's import JSON.

The reasons are found with Arrow over the id and label columns of the whole OUTDIR (one hash
lookup per compared column, no Python object per row); only the rows picked are read in full.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

from .. import prompt
from ..errors import JobError
from ..source import open_input
from ..store import ERRORS, RESULTS, OutputDir, open_storage
from .labels import normalised
from .quality import gold_field, label_fields, read_columns, read_gold

INVALID = ("invalid_output", "invalid_label", "invalid_json")
FORMATS = ("csv", "jsonl", "label-studio")
# How much each reason adds to a row's score.
WRONG, DIFFERENT, INVALID_ANSWER = 3.0, 2.0, 2.0
SPLIT = 2.0  # times (1 - agreement)


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
    folder, _, name = target.rstrip("/").rpartition("/")
    settings = outdir.read_job()["settings"]
    if against is not None:
        against.read_job()  # a folder that is not an OUTDIR is refused, naming it
    picks = _Picks(outdir, settings, gold or settings.get("gold_column"), against)
    chosen = picks.top(limit)
    rows = _with_input(settings, chosen)
    write = {"csv": _csv, "jsonl": _jsonl, "label-studio": _label_studio(picks.fields)}[kind]
    open_storage(folder if "/" in target else ".").write_file(
        name, lambda handle: write(rows, handle), outdir=False
    )
    return Reviewed(len(rows), picks.candidates, picks.reasons, target)


def _format_of(target: str) -> str:
    suffix = Path(target).suffix.lower()
    if suffix in (".csv", ".jsonl"):
        return suffix[1:]
    raise JobError(
        f"cannot write the review to {target}: use a .csv or .jsonl file name, "
        "or --format label-studio"
    )


class _Picks:
    """The rows of an OUTDIR with a reason to look at them, and their scores."""

    def __init__(
        self,
        outdir: OutputDir,
        settings: Mapping[str, Any],
        gold: str | None,
        against: OutputDir | None,
    ) -> None:
        self.outdir = outdir
        results = outdir.parts(RESULTS)
        self.fields = list(label_fields(settings, results.schema))
        table = read_columns(results, ["id", *self.fields, "agreement"])
        self.score = pa.repeat(pa.scalar(0.0), table.num_rows)
        self.reasons: dict[str, int] = {}
        compared: dict[str, pa.Array] = {}  # what each row's labels were compared with
        choices = label_fields(settings, results.schema)
        self.scored = gold_field(choices, gold)
        if gold is not None and self.scored is not None:
            reference = read_gold(settings, gold)
            values = normalised(reference.column("gold"), choices[self.scored])
            compared["gold"] = _lookup(table.column("id"), reference.column("id"), values)
            self._add("wrong", pc.not_equal(table.column(self.scored), compared["gold"]), WRONG)
        self.other = None if against is None else against.location
        if against is not None:
            theirs = read_columns(against.parts(RESULTS), ["id", *self.fields])
            differ = pa.repeat(pa.scalar(False), table.num_rows)
            for field in (f for f in self.fields if f in theirs.column_names):
                other = _lookup(table.column("id"), theirs.column("id"), theirs.column(field))
                compared[f"other {field}"] = other
                unequal = pc.not_equal(table.column(field), other)
                differ = pc.or_(differ, pc.fill_null(unequal, False))
            self._add("different", differ, DIFFERENT)
        if "agreement" in table.column_names:
            agreement = table.column("agreement")
            split = pc.multiply(pc.subtract(1.0, agreement), SPLIT)
            self._add("split", pc.less(agreement, 1.0), split)
        picked = pc.greater(self.score, 0.0)
        self.table = table.filter(picked)
        self.compared = {key: values.filter(picked) for key, values in compared.items()}
        self.score = self.score.filter(picked)
        _, state = outdir.count_state()
        self.invalid = [i for i, (kind, _) in state.open_errors().items() if kind in INVALID]
        if self.invalid:
            self.reasons["invalid"] = len(self.invalid)
        self.candidates = self.table.num_rows + len(self.invalid)

    def _add(self, kind: str, where: pa.Array, points: pa.Array | float) -> None:
        where = pc.fill_null(where, False)
        if count := pc.sum(where).as_py():
            self.reasons[kind] = count
        self.score = pc.add(self.score, pc.if_else(where, points, 0.0))

    def top(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` rows with the highest scores (a stable sort: the order they were
        answered among equals), each with why, its labels and what they were compared with."""
        scores = pa.concat_arrays(
            [
                pa.array(self.score, pa.float64()),
                pa.repeat(pa.scalar(INVALID_ANSWER, pa.float64()), len(self.invalid)),
            ]
        )
        order = pc.sort_indices(pa.table({"s": scores}), sort_keys=[("s", "descending")])
        chosen = order.slice(0, limit).to_pylist()
        ids = [
            self.table.column("id")[i].as_py()
            if i < self.table.num_rows
            else self.invalid[i - self.table.num_rows]
            for i in chosen
        ]
        answers = _rows_of(self.outdir, RESULTS, ids, ["id", "content", "model", "votes"])
        failures = _rows_of(self.outdir, ERRORS, ids, ["id", "error_type", "message", "answer"])
        rows = []
        for place, row_id in zip(chosen, ids, strict=True):
            here = place if place < self.table.num_rows else None
            labels = {f: None if here is None else self.table.column(f)[here].as_py()
                      for f in self.fields}  # fmt: skip
            seen = {k: None if here is None else v[here].as_py() for k, v in self.compared.items()}
            agreement = (
                self.table.column("agreement")[here].as_py()
                if here is not None and "agreement" in self.table.column_names
                else None
            )
            answer, failure = answers.get(row_id, {}), failures.get(row_id, {})
            why = self._why(labels, seen, agreement, answer.get("votes"), failure, here)
            row: dict[str, Any] = {
                "id": row_id,
                "why": "; ".join(why),
                "score": round(scores[place].as_py(), 3),
                **labels,
                "reviewed": None,  # for the reviewer's label (README "Label a dataset")
            }
            if "gold" in self.compared:
                row["gold"] = seen["gold"]
            if self.other is not None:
                row["other"] = next((v for k, v in seen.items() if k.startswith("other ")), None)
            if "agreement" in self.table.column_names:
                row["agreement"] = agreement
                row["votes"] = answer.get("votes")
            row["error_type"] = failure.get("error_type") if here is None else None
            row["answer"] = answer.get("content") if here is not None else failure.get("answer")
            row["model"] = answer.get("model")
            rows.append(row)
        return rows

    def _why(
        self,
        labels: Mapping[str, Any],
        seen: Mapping[str, Any],
        agreement: float | None,
        votes: Sequence[str] | None,
        failure: Mapping[str, Any],
        here: int | None,
    ) -> list[str]:
        if here is None:
            return [f"{failure.get('error_type')}: {failure.get('message') or ''}".strip()]
        why = []
        gold = seen.get("gold")
        if self.scored is not None and gold is not None and labels[self.scored] != gold:
            why.append(f"{self.scored} {labels[self.scored]!r}, gold says {gold!r}")
        for field in self.fields:
            other = seen.get(f"other {field}")
            if other is not None and labels[field] is not None and labels[field] != other:
                why.append(f"{field} {labels[field]!r}, {self.other} says {other!r}")
        if agreement is not None and agreement < 1:
            shown = ", ".join(map(str, votes or []))
            why.append(f"samples split: agreement {agreement:.2f} ({shown})")
        return why


def _lookup(ids: pa.ChunkedArray, keys: pa.ChunkedArray, values: Any) -> pa.Array:
    """``values`` (one per key) for each of ``ids``, null where an id is not a key."""
    where = pc.index_in(ids, value_set=pa.chunked_array(keys).combine_chunks())
    return pa.chunked_array(values).combine_chunks().take(where)


def _rows_of(
    outdir: OutputDir, folder: str, ids: Sequence[str], columns: list[str]
) -> dict[str, dict[str, Any]]:
    """The last committed row of each of ``ids`` (a few) in ``folder``, by id."""
    parts = outdir.parts(folder)
    names = [name for name in columns if name in parts.schema.names]
    wanted = pa.array(list(ids), pa.string())
    found: dict[str, dict[str, Any]] = {}
    if not parts.names or not ids:
        return found
    for batch in parts.batches(names):
        for row in batch.filter(pc.is_in(batch.column("id"), value_set=wanted)).to_pylist():
            found[row["id"]] = row
    return found


def _with_input(
    settings: Mapping[str, Any], picks: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The picked rows, in order, each with its input row's columns after its own (an input
    column whose name is taken is prefixed ``input_``)."""
    wanted = {pick["id"] for pick in picks}
    inputs: dict[str, dict[str, Any]] = {}
    try:
        for raw in open_input(settings["input_path"]).rows():
            if raw.data is None:
                continue
            row_id = prompt.row_id(raw.data, settings.get("id_column"))
            if row_id is not None and row_id in wanted and row_id not in inputs:
                inputs[row_id] = raw.data
    except JobError:
        pass  # the input moved away: the rows without its columns
    rows = []
    for pick in picks:
        row = dict(pick)
        for name, value in inputs.get(pick["id"], {}).items():
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
