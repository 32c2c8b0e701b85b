"""The dry run: what a run would send and what it would cost, without sending anything.

It checks the input as a run does (:func:`~zbatch.execution.setup.check_input`) and drives it
through the same :class:`~zbatch.pipeline.RowPipeline`, so a plan and a run cannot disagree on
which rows are sent. It holds no lock and writes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..batch.files import FilePacker, LineTooBig, batch_line
from ..batch.ledger import Ledger
from ..budget import Spend
from ..errors import JobError
from ..job.settings import Job
from ..pipeline import Row, RowPipeline
from ..pricing import cost
from ..schema import result_schema
from ..source import count_rows
from ..stats import Stats
from ..store import OutputDir, ResumeState
from ..store.state import RetryFailed
from .setup import check_input


@dataclass
class Plan:
    """What a run of the job would do now."""

    job: Job
    rows: int = 0
    done: int = 0
    to_send: int = 0
    unusable: int = 0  # rows that would go straight to the error log
    prompt_tokens: int = 0
    completion_tokens: int = 0  # upper bound: max_tokens per row, when set
    first_request: dict[str, Any] | None = None
    spent: float = 0.0  # what the OUTDIR has cost so far (its spend ledger)
    problems: list[str] = field(default_factory=list)
    batch_files: int | None = None  # batch mode: files (one batch each) a run would make
    in_batches: int = 0  # batch mode: rows open batches hold (collected, not sent again)

    @property
    def cost(self) -> float | None:
        return cost(self.job.price, self.prompt_tokens, 0, self.completion_tokens)


class _Tally:
    """The plan's sink for rows a run would log as errors: counted, the first few quoted."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def add(self, row: Row) -> None:
        self.plan.unusable += 1
        if len(self.plan.problems) < 5:
            self.plan.problems.append(row[4])


def plan_job(job: Job, *, retry_failed: RetryFailed) -> Plan:
    """Read the whole input as a run would, render every row, and count; sends nothing."""
    inputs = check_input(job, stdin=True)
    outdir = OutputDir(job.output_dir)
    state = ResumeState()
    previous = outdir.read_job_if_any()
    if previous is not None:
        if not outdir.holds_request(job.fingerprints(), job.shaping()):
            raise JobError(
                f"{job.output_dir} holds results of a different request; a run would refuse it "
                "(use a new output directory, or --force)"
            )
        state = outdir.load_state()
    plan = Plan(job, spent=(outdir.total_spend() or Spend()).usd)
    stats = Stats(total=count_rows(inputs.paths))
    tally = _Tally(plan)
    pipeline = RowPipeline(
        job,
        state=state,
        stats=stats,
        results=tally,
        errors=tally,
        schema=result_schema(job, {name: pa.null() for name in job.keep_columns}),
        retry_failed=retry_failed,
    )
    endpoint = job.profile.batch_endpoint
    packer = FilePacker(max_rows=job.batch_max_rows, max_bytes=job.batch_max_bytes)
    held = Ledger(outdir.storage).open_ids(job.fingerprint()) if job.mode == "batch" else ()
    for work in pipeline.works(inputs.rows()):
        if work is None:
            continue
        if work.id in held:
            plan.in_batches += 1
            continue
        if job.mode == "batch":
            try:
                packer.place(work.model, len(batch_line(work.id, 0, endpoint, work.body)))
            except LineTooBig as exc:
                tally.add((work.id, "bad_request", None, None, str(exc)))
                continue
        plan.to_send += 1
        # The pipeline's own estimates, as a run paces and budgets with them.
        plan.prompt_tokens += work.tokens - work.answer_tokens
        plan.completion_tokens += work.answer_tokens
        if plan.first_request is None:
            plan.first_request = json.loads(work.body)
    plan.rows = stats.input_rows
    plan.done = stats.skipped
    if job.mode == "batch":
        plan.batch_files = packer.files
    return plan
