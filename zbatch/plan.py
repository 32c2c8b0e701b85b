"""The dry run: what a run would send and what it would cost, without sending anything."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import prompt, store
from .errors import JobError
from .idset import IdSet
from .job import Job
from .pricing import cost, price_for
from .providers import provider_for
from .source import open_input


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
    problems: list[str] = field(default_factory=list)

    @property
    def cost(self) -> float | None:
        prices = provider_for(self.job.base_url).prices
        price = price_for(self.job.effective_model, self.job.prices, prices)
        return cost(price, self.prompt_tokens, 0, self.completion_tokens)


def plan_job(job: Job, *, retry_failed: bool) -> Plan:
    """Read the whole input as a run would, render every row, and count; sends nothing."""
    inputs = open_input(job.input_path)
    prompt.check_input(job, inputs)
    outdir = Path(job.output_dir)
    state = store.load_state(outdir) if outdir.exists() else store.ResumeState()
    if outdir.exists() and (outdir / "job.json").exists():
        previous = store.read_job_json(outdir)
        if previous.get("fingerprint") != job.fingerprint():
            raise JobError(
                f"{outdir} holds results of a different request; a run would refuse it "
                "(use a new output directory, or --force)"
            )
    plan = Plan(job)
    seen = IdSet()
    for raw in inputs.rows():
        plan.rows += 1
        if raw.data is None:
            plan.unusable += 1
            _note(plan, raw.problem or raw.where)
            continue
        row_id = prompt.row_id(raw.data, job.id_column)
        if row_id is None or not seen.add(row_id):
            plan.unusable += 1
            _note(plan, f"{raw.where}: {'missing' if row_id is None else 'duplicate'} id")
            continue
        if state.is_done(row_id, retry_failed=retry_failed):
            plan.done += 1
            continue
        try:
            body = prompt.render(raw.data, job)
        except prompt.RenderError as exc:
            plan.unusable += 1
            _note(plan, f"{raw.where}: {exc}")
            continue
        plan.to_send += 1
        plan.prompt_tokens += prompt.estimate_tokens(body)
        plan.completion_tokens += int(body.get("max_tokens") or 0)
        if plan.first_request is None:
            plan.first_request = body
    return plan


def _note(plan: Plan, problem: str) -> None:
    if len(plan.problems) < 5:
        plan.problems.append(problem)


def format_plan(plan: Plan) -> str:
    """The dry run's report, for a person."""
    job = plan.job
    if plan.cost is None:
        cost_text = f"unknown (no price for {job.effective_model}; add a [prices] table)"
    else:
        bound = "" if job.max_tokens else " (prompt only: set max_tokens to bound the answers)"
        cost_text = f"up to ${plan.cost:.4f}{bound}"
    lines = [
        f"job        {job.input_path} -> {job.output_dir}",
        f"model      {job.effective_model} at {job.base_url}",
        f"rows       {plan.rows} in input, {plan.done} already done, {plan.to_send} to send"
        + (f", {plan.unusable} unusable (would be logged as errors)" if plan.unusable else ""),
        f"tokens     ~{plan.prompt_tokens} prompt (chars/4), "
        f"<= {plan.completion_tokens} completion (max_tokens)",
        f"cost       {cost_text}",
    ]
    for problem in plan.problems:
        lines.append(f"problem    {problem}")
    if plan.first_request is not None:
        lines.append("first request body:")
        lines.append(json.dumps(plan.first_request, indent=2, ensure_ascii=False))
    lines.append("nothing was sent (dry run)")
    return "\n".join(lines)
