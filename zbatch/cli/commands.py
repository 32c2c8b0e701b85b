"""The command line: parse flags, build a Job, hand over, map errors to exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._version import __version__
from ..errors import Interrupted, StoreError, ZbatchError
from ..job.file import load_job
from ..job.settings import Job
from ..urls import check_scheme, is_remote
from .options import job_options

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("zbatch")
_console: logging.Handler | None = None


def _reports_errors(func: F) -> F:
    """Turn a ZbatchError into one clear line on stderr and its exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # From the first moment: a SIGTERM before a run's own handling is in place (or in a
        # command that has none) stops like a SIGINT does, exit 143, not by the default action.
        signal.signal(signal.SIGTERM, _terminated)
        try:
            return func(*args, **kwargs)
        except ZbatchError as exc:
            _say_error(str(exc))
            sys.exit(exc.exit_code)
        except BaseExceptionGroup as group:  # the SIGTERM above, raised inside a task group
            interrupted = group.subgroup(Interrupted)
            if interrupted is None:
                raise
            _say_error(str(interrupted.exceptions[0]))
            sys.exit(143)
        except OSError as exc:  # one the command did not foresee: still one line, exit 74
            where = f" ({exc.filename})" if exc.filename else ""
            _say_error(
                f"{exc.strerror or exc}{where}: fix it (free space, permissions, a file where a "
                "folder belongs), then run the same command; committed parts are intact"
            )
            sys.exit(StoreError.exit_code)
        except KeyboardInterrupt:  # before the run's own signal handling is in place
            click.echo("Interrupted; nothing was lost: run the same command to resume", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _terminated(signum: int, frame: object) -> None:
    raise Interrupted(
        "interrupted by SIGTERM before the run started; nothing was sent: run the same command",
        exit_code=143,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zbatch")
def cli() -> None:
    """Run tables of prompts through the Z.AI (or any OpenAI-compatible) chat API."""


@cli.command()
@click.argument("job_file", required=False, type=click.Path(dir_okay=False))
@job_options
@click.option(
    "--dry-run", is_flag=True, help="Check the job and input and estimate cost; send nothing."
)
@click.option(
    "--force", is_flag=True, help="Start a new generation of results when request settings changed."
)
@click.option(
    "--retry-failed",
    "retry_failed",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[TYPE,...]",
    help="Re-send rows whose latest outcome is a non-retryable error (of these types only, "
    "e.g. --retry-failed invalid_label,bad_request).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Send only the first N pending rows (a paid sample): with rows left the run ends "
    "'stopped at --limit: M rows pending'; the next run does the rest.",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Run only shard K of N (0-based; auto/N takes K from $JOB_COMPLETION_INDEX or "
    "$SLURM_ARRAY_TASK_ID). Shards may run at the same time into one OUTDIR.",
)
@click.option(
    "--cluster",
    metavar="dask://HOST:PORT|local:N",
    help="Run the job's shards as tasks on a Dask cluster (needs zbatch[dask]); concurrency "
    "is then a cluster-wide cap.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Batch mode: submit and exit 10; the same command later collects (for cron).",
)
@click.option("--quiet", "-q", is_flag=True, help="Print errors only.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run's summary (its manifest, as summary.json holds it) as JSON on stdout, "
    "and nothing else there.",
)
@_reports_errors
def run(
    job_file: str | None,
    dry_run: bool,
    force: bool,
    retry_failed: str | None,
    limit: int | None,
    shard: str | None,
    cluster: str | None,
    no_wait: bool,
    quiet: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Run or resume JOB_FILE (a TOML job); flags override its settings."""
    from .. import api
    from ..progress import choose
    from .format import expected_state, format_failures, format_summary

    retry = _retry_types(retry_failed)
    if as_json and dry_run:
        raise click.UsageError("--json prints a run's summary; --dry-run sends nothing")
    job = load_job(job_file, flags)
    if job.mode != "batch":
        batch_only = [name for name, given in _BATCH_FLAGS.items() if given(no_wait, flags)]
        if batch_only:
            raise click.UsageError(
                f"{' and '.join(batch_only)} {'goes' if len(batch_only) == 1 else 'go'} only "
                'with --mode batch (or [run] mode = "batch")'
            )
    if dry_run:
        _print_plan(job, retry_failed=retry)
        return
    _console_logging(quiet, job.log_format)
    if job.near_model is not None and not quiet and job.max_cost is None:  # a typo, likely
        click.echo(f"Note: {job.no_price}; cost figures will be unknown", err=True)
    if cluster is not None and not quiet:
        click.echo(_cluster_line(cluster), err=True)
    progress = choose(quiet=quiet, log_every=job.log_every)
    with _beside_bar(progress):
        result = api.run(
            job,
            progress=progress,
            handle_signals=True,
            retry_failed=retry,
            force=force,
            limit=limit,
            shard=shard,
            cluster=cluster,
            wait=not no_wait,
        )
    if as_json:
        manifest = result.manifest or result.stats.to_json()  # as summary.json has it
        click.echo(json.dumps({**manifest, "output": job.output_dir}, indent=2))
    elif not quiet:
        click.echo(f"zbatch run {job.output_dir}")
        click.echo(format_summary(result.stats))
    if quiet and result.stats.failed and not _json_console():
        click.echo(format_failures(result.stats, job.output_dir), err=True)
    if result.stopped is not None and (quiet or not _json_console()):
        state = expected_state(result.stopped)  # JSON, not quiet: the "stopped" event said it
        if state is None:
            _say_error(str(result.stopped))
        else:
            click.echo(f"{state}: {result.stopped}", err=True)
    sys.exit(result.exit_code)


def _cluster_line(cluster: str) -> str:
    """What --cluster is about to wait for, said before it waits (JobError for a flag that
    names no cluster)."""
    from ..cluster.driver import ClusterSpec
    from ..cluster.probe import connect_seconds

    if ClusterSpec.parse(cluster).address is None:
        return f"starting a local Dask cluster ({cluster}) ..."

    return f"connecting to the Dask scheduler at {cluster} (up to {connect_seconds():g} s) ..."


# Flags that mean something in batch mode only: each with how to tell it was given.
_BATCH_FLAGS: dict[str, Callable[[bool, dict[str, Any]], bool]] = {
    "--no-wait": lambda no_wait, flags: no_wait,
    "--finish-online": lambda no_wait, flags: bool(flags.get("finish_online")),
    "--poll-seconds": lambda no_wait, flags: flags.get("poll_seconds") is not None,
    "--resubmit-unconfirmed": lambda no_wait, flags: bool(flags.get("resubmit_unconfirmed")),
}


@cli.command()
@click.argument("job_file", required=False, type=click.Path(dir_okay=False))
@job_options
@_reports_errors
def validate(job_file: str | None, **flags: Any) -> None:
    """Check JOB_FILE and its input, count rows, estimate tokens and cost; send nothing."""
    _print_plan(load_job(job_file, flags), retry_failed=False)


def _retry_types(
    value: str | None, *, param_hint: str = "'--retry-failed'"
) -> bool | frozenset[str]:
    """--retry-failed: every type ("all", the bare flag), or the named ones."""
    from ..store.state import retry_failed_problem

    if value is None or value == "all":
        return value is not None
    types = frozenset(part.strip() for part in value.split(",") if part.strip())
    problem = retry_failed_problem(types)
    if problem is not None:  # a usage error: said before the job is loaded
        raise click.BadParameter(problem, param_hint=param_hint)
    return types


def _print_plan(job: Job, *, retry_failed: bool | frozenset[str]) -> None:
    from .. import api
    from .format import format_plan

    click.echo(format_plan(api.plan(job, retry_failed=retry_failed)))


def _outdir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An OUTDIR: a local folder that must exist, or an s3:// / gs:// URL (checked on use)."""
    if value is None:
        return value
    try:
        check_scheme(value, "OUTDIR")
    except ZbatchError as exc:
        raise click.BadParameter(str(exc)) from None
    if is_remote(value):
        return value
    from ..store.outdir import rehearsal_of  # here: --help and --version start without Arrow

    rehearsal = None if os.path.exists(value) else rehearsal_of(value)
    if rehearsal is not None:
        raise click.BadParameter(
            f"{value} does not exist; did you mean {rehearsal} (where --simulate put its answers)?"
        )
    return str(click.Path(file_okay=False, exists=True).convert(value, param, ctx))


@cli.command()
@click.argument("outdir", callback=_outdir)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_reports_errors
def status(outdir: str, as_json: bool) -> None:
    """Show done / failed / pending counts, tokens, cost and the last run's outcome."""
    from .. import api
    from .format import format_status

    report = api.status(outdir)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(format_status(report))


def _error_type(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--type: one error type, checked as run's --retry-failed checks its types."""
    if value is not None:
        _retry_types(value, param_hint="'--type'")
    return value


@cli.command()
@click.argument("outdir", callback=_outdir)
@click.option(
    "--type",
    "error_type",
    callback=_error_type,
    help="Only errors of this type (e.g. invalid_label).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Sample ids (and answers) shown per group.",
)
@click.option(
    "--answers",
    is_flag=True,
    help="Also show the paid answers of failed rows (the error log's answer column).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@_reports_errors
def errors(outdir: str, error_type: str | None, limit: int, answers: bool, as_json: bool) -> None:
    """Failed rows by error type and code, with sample ids and messages, and what to do."""
    from .. import api
    from .format import format_failure_groups

    groups = api.failures(outdir, error_type=error_type, limit=limit, answers=answers)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(g) for g in groups], indent=2))
    else:
        click.echo(format_failure_groups(groups, outdir))


@cli.command()
@click.argument("outdir", callback=_outdir)
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="File to write: .parquet, .jsonl or .csv; - writes JSONL to stdout.",
)
@click.option("--with-input", is_flag=True, help="Join the input columns back in, by id.")
@_reports_errors
def export(outdir: str, output: str, with_input: bool) -> None:
    """Write one table with the final outcome of every id (latest success, else latest error)."""
    from .. import api

    done = api.export(outdir, output, with_input=with_input)
    note = " (simulated answers from --simulate, not a model's)" if done.simulated else ""
    where = "stdout" if output == "-" else output
    click.echo(f"wrote {done.rows} rows to {where}{note}", err=output == "-")
    if done.note:
        click.echo(f"Note: rows {done.note}", err=True)


@cli.command()
@click.argument("outdir", callback=_outdir)
@_reports_errors
def cancel(outdir: str) -> None:
    """Cancel OUTDIR's open batches (batch mode); the next run collects what they finished."""
    from .. import api

    cancelled = api.cancel(outdir)
    for batch in cancelled:
        click.echo(f"batch {batch['batch_id']} (file {batch['file']}): {batch['state']}")
    if not cancelled:
        click.echo(f"no open batches in {outdir}: nothing to cancel")
    else:
        click.echo(
            f"{len(cancelled)} batches cancelled; the next run of the job collects the answers "
            "they had finished"
        )


@cli.command()
@click.argument("outdir", callback=_outdir)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines as runs write them (Ctrl-C ends)."
)
@click.option(
    "--lines", "-n", type=click.IntRange(min=0), help="Print only the last N lines first."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="With --follow: seconds between looks at run.log.",
)
@_reports_errors
def logs(outdir: str, follow: bool, lines: int | None, interval: float) -> None:
    """Print OUTDIR's run.log (what its runs did, one line per event); -f follows it."""
    import time

    from .. import api

    text, offset = api.read_log(outdir)
    if lines is not None:
        text = "".join(text.splitlines(keepends=True)[-lines:] if lines else [])
    click.echo(text, nl=False)
    try:
        while follow:
            time.sleep(interval)
            text, offset = api.read_log(outdir, offset)
            click.echo(text, nl=False)
    except KeyboardInterrupt:  # the way to stop following: not an error
        pass


@cli.command()
@click.argument("outdir", callback=_outdir)
@_reports_errors
def compact(outdir: str) -> None:
    """Merge each folder's part files into one; no reader ever sees an id twice."""
    from .. import api

    for done in api.compact(outdir):
        click.echo(f"{done.table}: {done.parts_before} parts -> {done.parts_after}")


@cli.group()
def cache() -> None:
    """The response cache shared by all your OUTDIRs ($XDG_CACHE_HOME/zbatch)."""


_CACHE_PATH = click.option(
    "--path",
    "path",
    metavar="PATH",
    help="The cache file [default: $XDG_CACHE_HOME/zbatch/responses.sqlite].",
)


@cache.command("stats")
@_CACHE_PATH
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_reports_errors
def cache_stats(path: str | None, as_json: bool) -> None:
    """How many answers the cache holds, how often they were used, its size."""
    from ..store.cache import format_stats

    figures = _open_cache(path).stats()
    if as_json:
        click.echo(json.dumps(figures.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(format_stats(figures))


@cache.command("prune")
@_CACHE_PATH
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Forget answers not used for this long: 30d, 12h, 90m, 2w.",
)
@_reports_errors
def cache_prune(path: str | None, older_than: str) -> None:
    """Forget answers not used for a while; the file shrinks."""
    from ..store.cache import parse_duration

    removed = _open_cache(path).prune(parse_duration(older_than))
    click.echo(f"removed {removed} answers not used for {older_than}")


def _open_cache(path: str | None) -> Any:
    from ..store.cache import open_cache

    opened, problem = open_cache("on", path, simulated=False)
    if opened is None:
        raise ZbatchError(problem or "the response cache cannot be opened")
    return opened


def _beside_bar(progress: object) -> contextlib.AbstractContextManager[object]:
    """With a bar on the terminal, log lines are written above it, not over it."""
    from ..progress import BarProgress

    if isinstance(progress, BarProgress):
        # Only here: a run off a terminal (cron) never imports tqdm, as progress.choose intends.
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect: contextlib.AbstractContextManager[object] = logging_redirect_tqdm(loggers=[log])
        return redirect
    return contextlib.nullcontext()


def _console_logging(quiet: bool, log_format: str = "plain") -> None:
    """Events to stderr, as plain or JSON lines: all of them off a terminal (cron), only
    warnings beside a bar.

    One handler, however often a command runs in this process."""
    from ..ops.events import formatter

    global _console
    if _console is None:
        _console = logging.StreamHandler(sys.stderr)
        log.addHandler(_console)
    handler = _console
    handler.setFormatter(formatter(log_format))
    if quiet:
        handler.setLevel(logging.ERROR)
    elif sys.stderr.isatty():
        handler.setLevel(logging.WARNING)
    else:
        handler.setLevel(logging.INFO)
    log.setLevel(logging.INFO)


def _json_console() -> bool:
    """Whether stderr carries JSON lines (--log-format json): then nothing else goes there."""
    from ..ops.events import JsonLines

    return _console is not None and isinstance(_console.formatter, JsonLines)


def _say_error(message: str) -> None:
    """An error on stderr: "Error: ..." or, with --log-format json, an "error" event."""
    if _json_console():
        log.error(message, extra={"event": "error"})
    else:
        click.echo(f"Error: {message}", err=True)


def main() -> None:
    """The console script's entry point."""
    # Arrow's default allocator keeps freed pages: reading a million Parquet rows one batch at
    # a time then holds ~80 MB more at the end than the system allocator (docs/performance.md).
    # Chosen by the variable Arrow reads on first use, so commands that never touch Arrow
    # (--help, --version) do not import it.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    cli(prog_name="zbatch")
