"""zbatch's own CPU per row, without the network: the runner and client on an instant transport.

    python bench/overhead.py                 # 20,000 rows, concurrency 64, 3 reps
    python bench/overhead.py --rows 50000 --reps 5
    python bench/overhead.py --no-journal    # the same without the answer journal

zbatch.run in this process, everything on (results and error-log part files,
checkpoints, progress log lines, run.log), with an ``httpx.AsyncBaseTransport`` that hands back
one prebuilt answer at once. What remains per row is zbatch's: reading and rendering the row,
the limits, building the ``httpx.Request``, parsing the answer, buffering and committing the
result. Printed: CPU µs per row (this process's user + system time) for each repetition and
their median. The figure to compare across changes; the network and aiohttp come on top
(bench/throughput.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
from common import arg_parser, make_jsonl, median, say, self_cpu_seconds, start
from throughput import run_zbatch

ANSWER = {
    "id": "instant",
    "model": "glm-4.6",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "positive"}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


class InstantTransport(httpx.AsyncBaseTransport):
    """Answers every request at once with the same read response."""

    def __init__(self) -> None:
        self._response = httpx.Response(200, content=json.dumps(ANSWER).encode())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._response


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--no-journal", action="store_true", help="journal = false: what the journal costs"
    )
    args = start(parser)
    work = Path(tempfile.mkdtemp(prefix="zbatch-overhead-"))
    make_jsonl(work / "input.jsonl", args.rows)
    figures = []
    for rep in range(args.reps):
        started = self_cpu_seconds()
        ok, _ = run_zbatch(
            "http://127.0.0.1:9/api/paas/v4",  # never dialled: the transport answers
            work / "input.jsonl",
            work / f"out-{rep}",
            args.concurrency,
            InstantTransport(),
            journal=not args.no_journal,
        )
        if ok != args.rows:
            raise SystemExit(f"rep {rep + 1}: {ok} rows answered, expected {args.rows}")
        figures.append((self_cpu_seconds() - started) / args.rows * 1e6)
        say(f"  rep {rep + 1}/{args.reps}: {figures[-1]:.1f} us CPU/row")
    shown = ", ".join(f"{f:.1f}" for f in figures)
    print(
        f"zbatch without the network, {args.rows:,} rows, concurrency {args.concurrency}, "
        f"journal {'off' if args.no_journal else 'on'}: "
        f"median {median(figures):.1f} us of CPU per row (reps: {shown})"
    )


if __name__ == "__main__":
    main()
