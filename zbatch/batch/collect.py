"""Collecting a batch: its output and error lines become rows, classified as live answers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from .. import prompt
from ..outcome import Failure, Success
from ..pipeline import RowPipeline, Work
from ..providers import Provider
from ..source import open_input

# OpenAI puts the requests an expired or cancelled batch never ran in its error file with
# these codes: they were not answered, so they are pending, not failed.
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})


def line_outcome(line: dict[str, Any], provider: Provider) -> Success | Failure | None:
    """What one output or error line says about its row (read and classified by the
    provider's rules, as a live answer is); None when the row was never run."""
    response = line.get("response")
    if not isinstance(response, dict):
        error = line.get("error")
        if not isinstance(error, dict):
            error = {}
        code = error.get("code")
        if code in NOT_RUN_CODES:
            return None
        message = str(error.get("message") or "the batch refused this line")
        return provider.classify(400, None if code is None else str(code), message)
    status = response.get("status_code")
    body = response.get("body")
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if status == 200:
        return provider.parse_answer(raw, None)
    code, message = provider.error_details(raw)
    status = status if isinstance(status, int) else 500
    return provider.classify(status, code, message or f"HTTP {status}")


class Lines:
    """One batch's lines settled into rows: each row at most once (``answered``)."""

    def __init__(
        self,
        pipeline: RowPipeline,
        log: logging.Logger,
        by_custom_id: dict[str, str],
        rows: dict[str, Work],
        charge: Callable[[Success], None],
    ) -> None:
        self.pipeline = pipeline
        self.log = log
        self.by_custom_id = by_custom_id
        self.rows = rows  # the rows' keep columns and reference labels, read again
        self.charge = charge  # bills an answer (the budget and the spend ledger)
        self.answered: set[str] = set()

    def settle(self, raw: bytes) -> None:
        """One output or error line: a result row, an error row, or nothing (never run)."""
        try:
            line = json.loads(raw)
        except ValueError:
            self.log.warning("skipped an output line that is not JSON: %.80r", raw)
            return
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        row_id = self.by_custom_id.get(custom_id) if isinstance(custom_id, str) else None
        if row_id is None or row_id in self.answered:
            return
        outcome = line_outcome(line, self.pipeline.job.profile)
        if outcome is None:
            return
        self.answered.add(row_id)
        if isinstance(outcome, Success):
            self.charge(outcome)  # the batch's spend is recorded once, whatever was committed
        if self.pipeline.is_done(row_id):
            return  # committed by a run that was killed before it could record that
        self.pipeline.stats.requests += 1
        pipeline = self.pipeline
        if isinstance(outcome, Failure):
            pipeline.fail(row_id, outcome, 1)  # a fatal or quota answer leaves it pending
            return
        pipeline.count_usage(outcome)
        work = self.rows.get(row_id) or Work(
            row_id, b"", 0, (None,) * len(pipeline.job.keep_columns)
        )
        failure = pipeline.accept(work, outcome, 1)
        if failure is not None:
            pipeline.fail(row_id, failure, 1, answer=outcome.content)


def input_rows(pipeline: RowPipeline, ids: set[str]) -> dict[str, Work]:
    """The given rows' keep_columns, reference labels and response-cache keys, read again from
    the input (an answer is matched to its row long after the row was read)."""
    found: dict[str, Work] = {}
    for raw in open_input(pipeline.job.input_path).rows():
        if raw.data is None:
            continue
        row_id = prompt.row_id(raw.data, pipeline.job.id_column)
        if row_id is not None and row_id in ids and row_id not in found:
            keep = pipeline.keep_values(raw.data, raw.where)
            work = Work(row_id, b"", 0, keep, pipeline.gold(raw.data))
            if pipeline.cache is not None:  # its answer fills the response cache, as live
                with contextlib.suppress(prompt.RenderError):  # (the input changed since)
                    body = prompt.render(raw.data, pipeline.job)
                    work = dataclasses.replace(work, cache_key=pipeline.cache_key(body))
            found[row_id] = work
    return found
