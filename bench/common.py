"""Shared helpers for the benchmarks: the fake server, input files, child RSS, tables.

The fake Z.AI server (tests/zai_server.py) always runs as its own subprocess, so on the
2-core machine the server and the client under test each get a core and the client's
figures are not diluted by the server's work in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "tests" / "zai_server.py"
sys.path.insert(0, str(SERVER_SCRIPT.parent))  # the scripts share the server's helpers
BASE_PATH = "/api/paas/v4"
MODEL = "glm-4.6"
MAX_TOKENS = 16
ZBATCH = shutil.which("zbatch", path=str(Path(sys.executable).parent)) or "zbatch"


# --- the fake server ------------------------------------------------------------------------


@dataclass
class Server:
    """A running fake server subprocess."""

    port: int
    process: subprocess.Popen[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_PATH}"

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The server's counters (GET /stats), request_starts included."""
        return self._call("GET", "/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/reset-stats", {})

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self._call("POST", "/control", settings)


@contextlib.contextmanager
def fake_server(**settings: Any) -> Iterator[Server]:
    """Start ``tests/zai_server.py`` as a subprocess; SIGTERM it on exit.

    ``settings`` become flags: ``fake_server(latency=0.5, max_inflight=6)``.
    """
    cmd = [sys.executable, str(SERVER_SCRIPT), "--port", "0"]
    for key, value in settings.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout is not None
        line = _readline_with_timeout(process, 15.0)
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield Server(int(line.split()[1]), process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _readline_with_timeout(process: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not lines:
        process.kill()
        raise RuntimeError("fake server printed no PORT line in time")
    return lines[0].strip()


# --- rows and input files -------------------------------------------------------------------


def prompt_for(i: int) -> str:
    """A short, unique prompt (about 60 characters, like a one-line classification task)."""
    return f"Review #{i}: the product arrived on time and works. Sentiment?"


def row_id(i: int) -> str:
    return f"r{i:07d}"


def request_body(prompt: str) -> dict[str, Any]:
    """The body zbatch sends for a prompt-column row with max_tokens (the bare loops send it)."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
    }


def make_jsonl(path: Path, rows: int) -> Path:
    """``rows`` lines of {"id", "prompt"}, written in chunks (flat memory)."""
    with path.open("w", encoding="utf-8") as handle:
        chunk: list[str] = []
        for i in range(rows):
            chunk.append(json.dumps({"id": row_id(i), "prompt": prompt_for(i)}))
            if len(chunk) >= 10_000:
                handle.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            handle.write("\n".join(chunk) + "\n")
    return path


def make_parquet(path: Path, rows: int, *, row_group: int = 50_000) -> Path:
    """The same rows as :func:`make_jsonl`, as Parquet (columns id, prompt)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group):
            stop = min(rows, start + row_group)
            ids = [row_id(i) for i in range(start, stop)]
            prompts = [prompt_for(i) for i in range(start, stop)]
            writer.write_table(pa.table({"id": ids, "prompt": prompts}, schema=schema))
    return path


# --- running a child and measuring it -------------------------------------------------------


@dataclass
class ChildRun:
    """What a measured child process did."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float  # user + system
    stdout: str
    stderr: str

    def check(self, what: str) -> None:
        """Stop the benchmark, with the end of the child's stderr, unless it exited 0."""
        if self.returncode != 0:
            raise SystemExit(f"{what} exited {self.returncode}\n{self.stderr[-3000:]}")


def bench_env(**extra: str) -> dict[str, str]:
    """Environment for a zbatch child: no inherited key, base URL or proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAI_", "HTTP", "ALL_PROXY"))}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# Runs argv[2:] as its own child and writes "<wait status> <ru_maxrss KiB> <CPU s>" to argv[1]
# (and the child's pid to argv[1] + ".pid" first). Why a launcher: a child this process
# spawned directly reports in ru_maxrss the peak of *this* process as well (Linux carries the
# pre-exec address space's high-water mark over exec, and subprocess starts children with
# vfork), so a 200 MB zbatch run spawned by a 350 MB benchmark would read as 350 MB.
_LAUNCHER = """
import os, sys
report = sys.argv[1]
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
with open(report + ".pid", "w") as handle:
    handle.write(str(pid))
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as handle:
    handle.write(f"{status} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
"""


def run_child(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 7200.0,
    on_tick: Callable[[float, int], None] | None = None,
    tick_seconds: float = 15.0,
    workdir: Path | None = None,
) -> ChildRun:
    """Run ``cmd`` to the end; wall seconds, peak RSS and CPU of that one child.

    The child is started by a small launcher process (``_LAUNCHER``), which takes its
    ``os.wait4`` figures. ``on_tick(elapsed, pid)`` is called every ``tick_seconds`` from a
    helper thread with the child's pid, for progress prints.
    """
    out_dir = Path(workdir or tempfile.gettempdir())
    base = out_dir / f".bench-child-{os.getpid()}"
    stdout_path, stderr_path, report = (base.with_suffix(s) for s in (".out", ".err", ".rusage"))
    child_pid = report.with_name(report.name + ".pid")
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        started = time.perf_counter()
        launcher = [sys.executable, "-c", _LAUNCHER, str(report), *cmd]
        process = subprocess.Popen(launcher, stdout=out, stderr=err, env=env or bench_env())
        done = threading.Event()

        def pid() -> int | None:
            with contextlib.suppress(OSError, ValueError):
                return int(child_pid.read_text())
            return None

        def watch() -> None:
            while not done.wait(tick_seconds):
                elapsed = time.perf_counter() - started
                if on_tick is not None and (child := pid()) is not None:
                    on_tick(elapsed, child)
                if elapsed > timeout:
                    for victim in (pid(), process.pid):
                        with contextlib.suppress(ProcessLookupError, TypeError):
                            os.kill(victim, signal.SIGKILL)  # type: ignore[arg-type]

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        process.wait()
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
    status, max_rss_kib, cpu = report.read_text().split()
    result = ChildRun(
        returncode=os.waitstatus_to_exitcode(int(status)),
        seconds=seconds,
        peak_rss_mb=int(max_rss_kib) / 1024,  # KiB on Linux
        cpu_seconds=float(cpu),
        stdout=stdout_path.read_text(errors="replace"),
        stderr=stderr_path.read_text(errors="replace"),
    )
    for path in (stdout_path, stderr_path, report, child_pid):
        path.unlink(missing_ok=True)
    return result


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The 1-minute load average: above the core count, someone else is using the CPU."""
    return os.getloadavg()[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float | None:
    """A live process's peak RSS so far (VmHWM), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def zbatch_run(input_path: Path | str, outdir: Path | str, base_url: str, *flags: str) -> list[str]:
    """The installed ``zbatch run -i INPUT -o OUTDIR --base-url URL FLAGS`` command line."""
    return [ZBATCH, "run", "-i", str(input_path), "-o", str(outdir), "--base-url", base_url, *flags]


def zbatch_cli(
    input_path: Path | str, outdir: Path | str, base_url: str, concurrency: int, *extra: str
) -> list[str]:
    """The ``zbatch run`` command line the benchmarks use (progress on: log lines)."""
    return zbatch_run(
        input_path,
        outdir,
        base_url,
        "--concurrency",
        str(concurrency),
        "--max-tokens",
        str(MAX_TOKENS),
        "--log-every",
        "5",
        *extra,
    )


@dataclass
class ServedRun:
    """A ``zbatch run`` against a fake server of its own, and what that server saw."""

    child: ChildRun
    outdir: Path
    summary: dict[str, Any]  # the run's summary.json
    stats: dict[str, Any]  # the server's /stats at the end
    server_cpu: float  # the server's CPU seconds


def run_served(
    work: Path,
    server_settings: dict[str, Any],
    concurrency: int,
    *extra: str,
    on_tick: Callable[[float, int], None] | None = None,
    tick_seconds: float = 15.0,
    program: str | None = None,
    allow_failed: bool = False,
) -> ServedRun:
    """:func:`zbatch_cli` on ``work/input.jsonl`` into a new OUTDIR under ``work``, against a
    fresh server started with ``server_settings``; stops the benchmark unless it exits 0 (or 1,
    some rows failed, with ``allow_failed``). ``program`` is another ``zbatch`` console script
    (another tree's venv, for before/after runs)."""
    outdir = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    with fake_server(**server_settings) as server:
        cmd = zbatch_cli(work / "input.jsonl", outdir, server.base_url, concurrency, *extra)
        if program is not None:
            cmd[0] = program
        child = run_child(
            cmd, env=bench_env(), workdir=work, on_tick=on_tick, tick_seconds=tick_seconds
        )
        stats = server.stats()
        server_cpu = cpu_seconds(server.process.pid)
    if not (allow_failed and child.returncode == 1):
        child.check("zbatch")
    summary = json.loads((outdir / "summary.json").read_text())
    return ServedRun(child, outdir, summary, stats, server_cpu)


def zbatch_overrides(
    input_path: Path, outdir: Path, base_url: str, concurrency: int, **extra: Any
) -> dict[str, Any]:
    """The same settings as :func:`zbatch_cli`, as ``load_job`` overrides (in-process runs)."""
    return {
        "input_path": str(input_path),
        "output_dir": str(outdir),
        "base_url": base_url,
        "concurrency": concurrency,
        "max_tokens": MAX_TOKENS,
        "log_every": 5.0,
        **extra,
    }


# --- numbers and tables ---------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """ "min-max" of a few repetitions, for the table."""
    if not values:
        return "-"
    return f"{min(values):,.0f}-{max(values):,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes straight into docs/performance.md)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A blank line, the title, a blank line, then the table (one section of the output)."""
    print(f"\n{title}\n")
    print(table(headers, rows))


def say(*parts: Any) -> None:
    """Progress print to stderr, flushed (stdout keeps the tables)."""
    print(*parts, file=sys.stderr, flush=True)


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's docstring (``doc``)."""
    return argparse.ArgumentParser(description=(doc or "").partition("\n")[0])


def start(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line, then print the machine line that heads every benchmark's output."""
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    return args


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temp dir for a benchmark's inputs and OUTDIRs, removed at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def machine_line() -> str:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = [f"python {platform.python_version()}"]
    for package in ("httpx", "httpcore", "httpx2", "aiohttp", "httpx-aiohttp", "pyarrow"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:  # not every venv has the optional transports
            versions.append(f"{package} not installed")
    try:
        import sniffio  # noqa: F401

        versions.append("sniffio importable")
    except ImportError:
        versions.append("sniffio NOT importable")
    try:
        import uvloop  # type: ignore[import-not-found]  # noqa: F401

        server_loop = "uvloop"
    except ImportError:
        server_loop = "asyncio"
    return (
        f"{os.cpu_count()} cores, {platform.system()} {platform.release()}; {tree_state()}; "
        + ", ".join(versions)
        + f"; fake server loop: {server_loop}"
    )


def tree_state() -> str:
    """The commit measured, and which zbatch/ files differed from it (others edit them)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "zbatch"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.split()
    except OSError:
        return "git state unknown"
    changed = sorted({Path(p).name for p in dirty if p.endswith(".py")})
    return f"zbatch at {head}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def checked_run(job: Any, rows: int) -> tuple[float, Path]:
    """Run ``job`` (a zbatch.Job) to the end; its seconds and OUTDIR, after checking that it
    exited 0 with every one of ``rows`` rows in results/ exactly once."""
    import pyarrow.dataset as ds

    import zbatch

    started = time.perf_counter()
    result = zbatch.run(job)
    seconds = time.perf_counter() - started
    outdir = Path(job.output_dir)
    ids = ds.dataset(outdir / "results", format="parquet").to_table(columns=["id"]).column("id")
    if result.exit_code != 0 or len(ids) != rows or len(set(ids.to_pylist())) != rows:
        raise RuntimeError(f"exit {result.exit_code}, {len(ids)} result rows for {rows} rows")
    return seconds, outdir
