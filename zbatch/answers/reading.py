"""How an answer's text becomes the values of its result columns: the label (labels.choices),
the JSON object (response_format json_object, json_fields, output.schema) and its typed
fields; and how several answers to one row (request.samples) become one row by majority.

    reader = AnswerReader(job)
    reading = reader.read(answer.content)     # a Reading, or a Failure saying why it fits not
    reader.columns(reading)                   # [label?, json?, *typed fields]
    reader.vote(readings)                     # the majority reading, the votes, the agreement
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import redact
from ..job.settings import Job
from ..outcome import Failure, Scope
from ..schema import answer_fields, fit_value
from ..stats import Stats
from .checks import NotJson, normalize_label, parse_json_object
from .schema import SchemaCheck, enum_fields


@dataclass(frozen=True, slots=True)
class Reading:
    """What an answer says: its label, its JSON object (or neither), and its text."""

    content: str
    label: str | None = None
    obj: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Vote:
    """The majority of a row's samples: the reading that stands for them, every answer's
    vote (None for an answer that does not fit) and the majority's share."""

    reading: Reading
    votes: list[str | None]
    agreement: float


class AnswerReader:
    """Reads answers the way one job asks for them."""

    def __init__(self, job: Job, stats: Stats) -> None:
        self.job = job
        self.stats = stats
        schema = job.answer_schema
        self._fields = [] if schema is None else answer_fields(schema)
        self._check = None if job.output_schema is None else SchemaCheck(job.output_schema)
        self._enums = {} if job.output_schema is None else enum_fields(job.output_schema)

    def read(self, content: str) -> Reading | Failure:
        """The answer as the job reads it, or the failure that says why it does not fit."""
        job = self.job
        if self._check is not None:
            obj, problem = self._check.read(content)
            if obj is None:
                return Failure("invalid_output", Scope.ROW, problem)
            return Reading(content, obj=obj)
        label = None
        if job.choices:
            label = normalize_label(content, job.choices)
            if label is None:
                shown = redact(content[:80])
                return Failure(
                    "invalid_label", Scope.ROW, f"answer {shown!r} is not one of the choices"
                )
        obj = None
        if job.response_format == "json_object":
            try:
                obj = parse_json_object(content)
            except NotJson as exc:
                return Failure("invalid_json", Scope.ROW, str(exc))
        return Reading(content, label, obj)

    def columns(self, reading: Reading) -> list[Any]:
        """The values of the label, json and typed field columns, in schema order; a field
        that is missing or does not fit is null, and counted (a null is never silent)."""
        values: list[Any] = []
        if self.job.choices:
            values.append(reading.label)
        obj = reading.obj
        if obj is not None:
            values.append(json.dumps(obj, ensure_ascii=False))
            stats = self.stats
            for field in self._fields:
                raw = obj.get(field.name)
                value = fit_value(raw, field)
                if value is None and self._check is None:
                    (stats.json_missing if raw is None else stats.json_mistyped)[field.name] += 1
                values.append(value)
        return values

    def vote(self, readings: Sequence[Reading | Failure]) -> Vote | None:
        """The majority of several answers to one row; None when none of them fits.

        An answer's vote is its label, else the value of the schema's first enum field, else
        its text. The row keeps the first answer that voted with the majority, with each enum
        field set to that field's own majority; agreement is the majority's share of all."""
        votes = [None if isinstance(r, Failure) else self._vote_of(r) for r in readings]
        counted = Counter(v for v in votes if v is not None)
        if not counted:
            return None
        winner, count = counted.most_common(1)[0]
        chosen = next(
            r
            for r, v in zip(readings, votes, strict=True)
            if v == winner and isinstance(r, Reading)
        )
        if chosen.obj is not None and self._enums:
            objs = [r.obj for r in readings if isinstance(r, Reading) and r.obj is not None]
            merged = dict(chosen.obj)
            for name in self._enums:
                values = Counter(o.get(name) for o in objs if isinstance(o.get(name), str))
                if values:
                    merged[name] = values.most_common(1)[0][0]
            chosen = replace(chosen, obj=merged)
        return Vote(chosen, votes, count / len(readings))

    def _vote_of(self, reading: Reading) -> str:
        if reading.label is not None:
            return reading.label
        if reading.obj is not None and self._enums:
            value = reading.obj.get(next(iter(self._enums)))
            return value if isinstance(value, str) else json.dumps(value)
        return reading.content
