"""The flags of `zbatch run` and `zbatch validate` that override job-file settings: one per
Job setting, its default read from the Job (so help texts cannot drift from it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..job.file import default_of
from ..job.rules import LOG_FORMATS, MODES, RESPONSE_FORMATS
from ..job.settings import DEFAULT_MODEL
from ..providers import PROVIDERS, SCHEMA_FORMS

F = TypeVar("F", bound=Callable[..., Any])


def _default(name: str) -> str:
    """ " [default: X]" for a help text, from the Job's own default."""
    value = default_of(name)
    if isinstance(value, bool):
        return f" [default: {'on' if value else 'off'}]"
    return f" [default: {value:g}]" if isinstance(value, float) else f" [default: {value}]"


def job_options(func: F) -> F:
    """The flags that override job-file settings (shared by run and validate)."""
    options = [
        click.option(
            "--input",
            "-i",
            "input_path",
            help="Input file, folder or glob (.jsonl, .csv, .tsv, each maybe .gz; .parquet); "
            "- reads JSONL from stdin.",
        ),
        click.option("--output", "-o", "output_dir", help="Output directory (OUTDIR)."),
        click.option(
            "--id-column",
            help="Column holding each row's id [default: id, or custom_id for batch lines].",
        ),
        click.option("--keep-columns", help="Comma-separated input columns to copy into results."),
        click.option(
            "--model",
            help=f"Model name [default: {DEFAULT_MODEL}]; overrides batch-line bodies too.",
        ),
        click.option("--system", help="System message prepended to every request."),
        click.option(
            "--template", help='Prompt template over the row\'s columns, e.g. "Review: {text}".'
        ),
        click.option(
            "--prompt-column",
            help=f"Column holding the prompt{_default('prompt_column')}.",
        ),
        click.option(
            "--messages-column", help="Column holding a list of {role, content} messages."
        ),
        click.option("--temperature", type=float, help="Sampling temperature (0-1 on Z.AI)."),
        click.option("--top-p", type=float, help="Nucleus sampling top_p."),
        click.option("--max-tokens", type=int, help="Maximum tokens in each answer."),
        click.option(
            "--thinking/--no-thinking", default=None, help="Enable or disable the model's thinking."
        ),
        click.option(
            "--response-format",
            type=click.Choice(RESPONSE_FORMATS),
            help="Ask for a JSON object answer.",
        ),
        click.option(
            "--base-url",
            help=f"API base URL [default: $ZAI_BASE_URL or {default_of('base_url')}].",
        ),
        click.option(
            "--provider",
            type=click.Choice(list(PROVIDERS)),
            help="Provider profile (error codes, prices) [default: chosen from the base URL].",
        ),
        click.option(
            "--n-choices/--no-n-choices",
            default=None,
            help="With samples > 1: one request asking for n answers, or one request per "
            "sample [default: the provider's].",
        ),
        click.option(
            "--schema-form",
            type=click.Choice(SCHEMA_FORMS),
            help="How output.schema is sent to the endpoint [default: the provider's].",
        ),
        click.option(
            "--api-key-env",
            help=f"Environment variable holding the API key{_default('api_key_env')}.",
        ),
        click.option(
            "--timeout",
            type=float,
            help=f"Seconds allowed per attempt{_default('timeout')}.",
        ),
        click.option(
            "--concurrency",
            "-c",
            type=int,
            help=f"Most requests in flight (a ceiling; adapts on 429){_default('concurrency')}.",
        ),
        click.option(
            "--rpm", type=float, help="Cap on request starts per minute (retries included)."
        ),
        click.option("--tpm", type=float, help="Cap on estimated tokens per minute."),
        click.option(
            "--max-retries",
            type=int,
            help=f"Retries per row on transient errors{_default('max_retries')}.",
        ),
        click.option(
            "--max-attempt-seconds",
            type=float,
            help=f"Give up on a row after this many seconds{_default('max_attempt_seconds')}.",
        ),
        click.option(
            "--backoff-base",
            type=float,
            help=f"Retry n waits uniform(0, min(cap, base * 2**n)) s{_default('backoff_base')}.",
        ),
        click.option(
            "--backoff-cap",
            type=float,
            help=f"Longest backoff in seconds{_default('backoff_cap')}.",
        ),
        click.option(
            "--choices",
            help="Comma-separated allowed labels; answers are normalised to one of them.",
        ),
        click.option(
            "--part-rows",
            type=int,
            help=f"Commit a part file every N rows{_default('part_rows')}.",
        ),
        click.option(
            "--part-seconds",
            type=float,
            help=f"Commit a part file at least every N seconds{_default('part_seconds')}.",
        ),
        click.option(
            "--log-every",
            type=float,
            help=f"Seconds between progress lines off a terminal{_default('log_every')}.",
        ),
        click.option(
            "--grace",
            "grace_seconds",
            type=float,
            help=f"Seconds in-flight requests get after SIGINT/SIGTERM{_default('grace_seconds')}.",
        ),
        click.option(
            "--wait-for-quota/--no-wait-for-quota",
            default=None,
            help="On a quota stop, sleep until the reset (at most "
            f"{default_of('quota_wait_seconds') / 3600:g} h) and continue.",
        ),
        click.option(
            "--down-after",
            type=float,
            help="Stop (exit 69) when nothing has succeeded for this many seconds and every "
            f"attempt failed on connection, timeout or 5xx{_default('down_after')}.",
        ),
        click.option(
            "--max-cost",
            type=float,
            help="Budget in USD for OUTDIR, all runs together: stop (exit 5) before a request "
            "that could pass it.",
        ),
        click.option(
            "--hedge/--no-hedge",
            default=None,
            help="Once the input is used up, re-send an attempt stuck far beyond the usual "
            "latency on a second connection; both answers are paid for"
            f"{_default('hedge')}.",
        ),
        click.option(
            "--journal/--no-journal",
            default=None,
            help="Make each answer durable in OUTDIR within ~50 ms, so a kill -9 never buys "
            f"it twice{_default('journal')}.",
        ),
        click.option(
            "--report/--no-report",
            default=None,
            help="Write OUTDIR/report.html (charts of the figures of `zbatch report`) at the "
            f"end of the run, when zbatch[report] is installed{_default('report')}.",
        ),
        click.option(
            "--mode",
            type=click.Choice(MODES),
            help="online: live requests; batch: the provider's Batch API, at its batch price "
            f"{_default('mode')}.",
        ),
        click.option(
            "--poll-seconds",
            type=float,
            help=f"Batch mode: seconds between status polls (±20 %){_default('poll_seconds')}.",
        ),
        click.option(
            "--finish-online/--no-finish-online",
            default=None,
            help="Batch mode: send rows that batches left unanswered live afterwards.",
        ),
        click.option(
            "--resubmit-unconfirmed",
            is_flag=True,
            default=None,
            help="Batch mode: create again the batches a provider without a batch listing "
            "cannot confirm (only after checking it holds none of them: else paid twice).",
        ),
        click.option(
            "--dedupe/--no-dedupe",
            default=None,
            help=f"Send identical deterministic requests (temperature 0) once{_default('dedupe')}.",
        ),
        click.option(
            "--cache",
            metavar="PATH|on|all|off",
            help="The response cache: a SQLite file, or on (deterministic requests), all, off "
            "[default: on, in $XDG_CACHE_HOME/zbatch].",
        ),
        click.option(
            "--metrics-file",
            metavar="PATH",
            help="Write Prometheus metrics to this node_exporter textfile (.prom), atomically, "
            "during the run and at the end (needs zbatch[metrics]).",
        ),
        click.option(
            "--pushgateway",
            metavar="URL",
            help="Push Prometheus metrics to this Pushgateway, grouped by job and shard, during "
            "the run and at the end (needs zbatch[metrics]).",
        ),
        click.option(
            "--metrics-every",
            type=float,
            help=f"Seconds between metric writes and pushes{_default('metrics_every')}.",
        ),
        click.option(
            "--ping",
            metavar="URL",
            help="Dead-man's-switch: GET URL/start at launch, URL on success, URL/<exit code> "
            "otherwise; a failed ping never fails the run.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            help=f"Events on stderr and in run.log as plain lines or JSON lines"
            f"{_default('log_format')}.",
        ),
        click.option(
            "--simulate",
            is_flag=True,
            default=None,
            help="Use the built-in simulated endpoint: no key, no network, real outputs.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
