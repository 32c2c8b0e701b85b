"""Human-readable tables for the CLI: the plan, a run's summary, an OUTDIR's status."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import BatchPending, Interrupted, ZbatchError
from ..schema import INPUT_FAULTS
from ..stats import Agreement, Stats

if TYPE_CHECKING:  # the dry run comes with a run's imports; status starts without them
    from ..execution.plan import Plan
    from ..results.failures import FailureGroup
    from ..results.status import LastRun, Status


def table(rows: Sequence[tuple[str, object]]) -> str:
    """Two aligned columns: a name, then its value."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _counts(counts: Mapping[str, int], *, by_size: bool = False) -> str:
    items = sorted(counts.items(), key=lambda kv: -kv[1]) if by_size else sorted(counts.items())
    return ", ".join(f"{name} {count}" for name, count in items)


def _dollars(value: float | None, unknown: str) -> str:
    return unknown if value is None else f"${value:.4f}"


def _spent(spent: float | None, budget: float | None) -> str:
    text = _dollars(spent, "unknown")
    return text if budget is None else f"{text} of ${budget:.4f} (max_cost)"


def format_summary(stats: Stats) -> str:
    """The end-of-run table (summary.json's figures)."""
    rows: list[tuple[str, object]] = [
        ("outcome", stats.outcome),
        ("rows ok", stats.ok),
        ("rows failed", f"{stats.failed} ({_counts(stats.errors) or 'none'})"),
        ("skipped (done before)", stats.skipped),
        ("pending", stats.pending),
        ("requests", stats.requests),
        ("retries", _counts(stats.retries) or "none"),
        ("tokens in / out", f"{stats.prompt_tokens} / {stats.completion_tokens}"),
        ("estimated cost", _dollars(stats.cost, "unknown model price")),
        ("wall time", f"{stats.elapsed:.1f} s"),
        ("requests/s", stats.requests_per_second),
        ("concurrency final / min", f"{stats.concurrency} / {stats.concurrency_min}"),
    ]
    if stats.limiter:
        rows.append(("limiter", stats.limiter))
    if stats.spent is not None and (stats.max_cost is not None or stats.skipped):
        rows.append(("spent, all runs", _spent(stats.spent, stats.max_cost)))
    if stats.hedged:
        spent = _dollars(stats.hedged_usd if stats.price else None, "unknown")
        rows.append(("hedged (slow tail)", f"{stats.hedged} requests ({spent} paid twice)"))
    if stats.worst_charged:
        charged = _dollars(stats.worst_charged_usd if stats.price else None, "unknown")
        rows.append(("no usable usage", f"{stats.worst_charged} answers (charged {charged})"))
    if stats.deduplicated:
        saved = _dollars(stats.saved_cost, "an unknown amount")
        rows.append(("deduplicated", f"{stats.deduplicated} rows (saved {saved})"))
    if stats.cache_hits:
        saved = _dollars(stats.cache_saved_cost, "an unknown amount")
        rows.append(("from the cache", f"{stats.cache_hits} rows (saved {saved})"))
    if stats.repairs:
        rows.append(("schema repairs", f"{stats.repairs} asked, {stats.repaired} rows repaired"))
    if stats.truncated:
        rows.append(("cut off (length)", stats.truncated))
    if stats.labels:
        rows.append(("labels", _counts(stats.labels, by_size=True)))
    rows.extend(_agreement(stats.gold))
    if stats.json_missing:
        rows.append(("JSON fields missing", _counts(stats.json_missing, by_size=True)))
    if stats.json_mistyped:
        rows.append(("JSON fields mistyped", _counts(stats.json_mistyped, by_size=True)))
    if stats.keep_mistyped:
        rows.append(("keep columns nulled", _counts(stats.keep_mistyped, by_size=True)))
    return table(rows)


def expected_state(stopped: ZbatchError) -> str | None:
    """How to begin the last line of a run that stopped in a state the user asked for
    (batches left running by --no-wait, an interrupt); None for what went wrong ("Error:"),
    so that a cron log's grep for "Error" finds only errors."""
    if isinstance(stopped, BatchPending):
        return "Still running"
    if isinstance(stopped, Interrupted):
        return "Stopped"
    return None


def format_failures(stats: Stats, outdir: str) -> str:
    """The one line --quiet still prints when rows failed."""
    return f"{stats.failed} rows failed ({_counts(stats.errors)}); see: zbatch errors {outdir}"


def format_status(status: Status) -> str:
    """`zbatch status` as a small table."""
    last = status.last_run
    rows: list[tuple[str, object]] = [
        ("output", status.outdir),
        ("input rows", "unknown" if status.input_rows is None else status.input_rows),
        ("done", status.done),
        ("failed", _failed(status)),
        ("pending", "unknown (input not found)" if status.pending is None else status.pending),
        ("tokens in / out", f"{status.tokens.prompt} / {status.tokens.completion}"),
        ("spent so far", _spent(status.cost_usd, status.max_cost)),
    ]
    for shard in status.shards:
        rows.append((f"shard {shard.shard}", _last_run(shard.last_run, "no run yet")))
    rows.append(("all shards" if status.shards else "last run", _last_run(last, "none")))
    if status.cache.get("hits"):
        saved = _dollars(status.cache["saved_usd"], "an unknown amount")
        rows.append(("from the cache", f"{status.cache['hits']} rows (saved {saved})"))
    if status.labels:
        rows.append(("labels", _counts(status.labels, by_size=True)))
    if status.gold is not None:
        rows.extend(_agreement(status.gold))
    for holder in status.active:
        rows.insert(1, ("running now", f"{holder} (counts are of committed rows)"))
    if status.uncommitted:
        rows.insert(2, ("not yet committed", f"{status.uncommitted} finished rows (journaled)"))
    held = status.reserved
    if held is not None and held["writers"]:
        rows.append(
            (
                "reserved now",
                f"${held['reserved_usd']:.4f} in flight + ${held['unsettled_usd']:.4f} unsettled "
                f"({held['writers']} writers)",
            )
        )
    if status.simulated:
        rows.insert(1, ("simulated", "yes: these answers came from --simulate, not a model"))
    for batch in status.batches:
        age = batch["age_seconds"]
        rows.append(
            (
                f"batch {batch['file']}",
                f"{batch['batch_id'] or '-'} {batch['state']}, {batch['completed']}/"
                f"{batch['rows']} answered, {batch['failed']} failed, created "
                f"{batch['created'] or '-'} UTC ({'-' if age is None else _age(age)} ago)",
            )
        )
    return table(rows)


def _last_run(last: LastRun | None, none: str) -> str:
    if last is None:
        return none
    exit_code = "none yet" if last.exit_code is None else last.exit_code
    ended = f", ended {last.ended_at}" if last.ended_at else ""
    return f"{last.outcome} (exit {exit_code}){ended}"


def _age(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _agreement(agreement: Agreement) -> list[tuple[str, object]]:
    """Accuracy on the rows with a reference label, then one confusion line per gold label."""
    if agreement.accuracy is None:
        return []
    rows: list[tuple[str, object]] = [
        (
            "gold agreement",
            f"{agreement.accuracy:.1%} ({agreement.agreed} of {agreement.rows} "
            "rows with a reference label)",
        )
    ]
    for gold, predicted in agreement.confusion().items():
        rows.append((f"  gold {gold}", _counts(predicted, by_size=True)))
    return rows


def _failed(status: Status) -> str:
    if not status.failed:
        return "0"
    text = f"{status.failed} ({_counts(status.errors, by_size=True)})"
    if status.failed_retryable:
        text += f"; {status.failed_retryable} retryable: the next run sends them again"
    return text


def format_failure_groups(groups: Sequence[FailureGroup], outdir: str) -> str:
    """`zbatch errors`: each group of failed rows with a few ids, messages (and answers), then
    what to do about them: only the types a --retry-failed can fix are offered it."""
    from ..results.failures import RETRY_FIXES  # here: a run prints its summary without them

    if not groups:
        return f"no failed rows in {outdir}"
    lines = []
    for group in groups:
        code = f" {group.error_code}" if group.error_code else ""
        retry = f", {group.retryable} retryable" if group.retryable else ""
        lines.append(f"{group.error_type}{code}: {group.count} rows{retry}")
        lines.append(
            f"  ids: {', '.join(group.ids)}" + (" ..." if group.count > len(group.ids) else "")
        )
        lines.extend(f"  message: {message}" for message in group.messages)
        lines.extend(f"  answer {row_id}: {answer!r}" for row_id, answer in group.answers.items())
    total = sum(group.count for group in groups)
    lines.append(f"{total} failed rows")
    retryable = sum(group.retryable for group in groups)
    if retryable:
        lines.append(f"- {retryable} retryable: the next run of the same command sends them again")
    fixable = sorted({g.error_type for g in groups if g.error_type in RETRY_FIXES})
    if fixable:
        lines.append(
            "- to send the others again: zbatch run ... --retry-failed " + ",".join(fixable)
        )
    inputs = sorted({g.error_type for g in groups if g.error_type in INPUT_FAULTS})
    if inputs:
        lines.append(f"- {', '.join(inputs)}: fix those rows in the input; a retry cannot fix them")
    return "\n".join(lines)


def format_plan(plan: Plan) -> str:
    """The dry run's report."""
    job = plan.job
    if plan.cost is None:
        cost_text = f"unknown: {job.no_price}"
    else:
        bound = "" if job.max_tokens else " (prompt only: set max_tokens to bound the answers)"
        cost_text = f"up to ${plan.cost:.4f}{bound}"
    unusable = f", {plan.unusable} unusable (would be logged as errors)" if plan.unusable else ""
    lines = [
        f"job        {job.input_path} -> {job.output_dir}",
        f"model      {job.effective_model} at {job.base_url}",
        f"rows       {plan.rows} in input, {plan.done} already done, {plan.to_send} to send"
        + unusable,
        f"tokens     ~{plan.prompt_tokens} prompt (chars/4), "
        f"<= {plan.completion_tokens} completion (max_tokens)",
        f"cost       {cost_text}",
    ]
    if job.max_cost is not None and plan.cost is not None:
        left = job.max_cost - plan.spent
        if plan.cost > left:
            lines.append(
                f"warning    the estimate (${plan.cost:.4f}) exceeds what is left of the budget "
                f"(${left:.4f} of max_cost ${job.max_cost:.4f}): the run would stop with exit 5"
            )
    if plan.batch_files is not None:
        waiting = f"; {plan.in_batches} rows wait in open batches" if plan.in_batches else ""
        lines.append(
            f"batches    {plan.batch_files} files -> {plan.batch_files} batches "
            f"(<= {job.batch_max_rows} rows and {job.batch_max_bytes} bytes each, one model "
            f"each); cost at the batch price ({job.batch_discount:g} x live){waiting}"
        )
    lines.extend(f"problem    {problem}" for problem in plan.problems)
    if plan.first_request is not None:
        lines.append("first request body:")
        lines.append(json.dumps(plan.first_request, indent=2, ensure_ascii=False))
    lines.append("nothing was sent (dry run)")
    return "\n".join(lines)
