"""CPU per row of the labelling loop's run-side checks: the response cache lookup (key and
SQLite read, hit and miss), storing answers at commit, and validating an answer against a JSON
Schema (fastjsonschema as shipped, jsonschema for comparison), each beside a bare loop that
only builds the request body, measured in one run.

    python bench/labelling_cpu.py                   # 20,000 rows
    python bench/labelling_cpu.py --rows 100000

Process CPU time (time.process_time), not wall time: the figures hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zbatch.answers.schema import SchemaCheck
from zbatch.store.cache import ResponseCache, request_key

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "aspects": {"type": "array", "items": {"type": "string"}},
        "would_recommend": {"type": "boolean"},
        "stars_guess": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["sentiment", "aspects", "would_recommend", "stars_guess"],
    "additionalProperties": False,
}
ENDPOINT = "https://api.z.ai/api/paas/v4/chat/completions"


def body(i: int) -> dict[str, Any]:
    return {
        "model": "glm-4.6",
        "messages": [
            {"role": "system", "content": "You read customer reviews and reply with JSON only."},
            {"role": "user", "content": f"Product: thing {i}\nReview: it was fine, number {i}"},
        ],
        "temperature": 0,
        "max_tokens": 200,
    }


def answer(i: int) -> str:
    return json.dumps(
        {
            "sentiment": ("positive", "negative", "neutral")[i % 3],
            "aspects": ["price", f"aspect {i}"],
            "would_recommend": i % 2 == 0,
            "stars_guess": 1 + i % 5,
        }
    )


def cpu_us(rows: int, step: Callable[[int], object]) -> float:
    """Process CPU microseconds per call of ``step`` over ``rows`` rows."""
    started = time.process_time()
    for i in range(rows):
        step(i)
    return (time.process_time() - started) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    rows = parser.parse_args().rows
    bodies = [body(i) for i in range(rows)]
    answers = [answer(i) for i in range(rows)]
    figures: list[tuple[str, float]] = []

    figures.append(
        ("bare loop: encode the body (json.dumps)", cpu_us(rows, lambda i: json.dumps(bodies[i])))
    )
    figures.append(
        (
            "cache key (canonical JSON + SHA-256)",
            cpu_us(rows, lambda i: request_key(bodies[i], endpoint=ENDPOINT, samples=1)),
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        cache = ResponseCache(Path(folder) / "responses.sqlite")
        keys = [request_key(b, endpoint=ENDPOINT, samples=1) for b in bodies]
        figures.append(
            ("cache lookup, miss (empty cache)", cpu_us(rows, lambda i: cache.get(keys[i])))
        )
        entry = [{"content": "x", "prompt_tokens": 50, "completion_tokens": 20}]
        started = time.process_time()
        for start in range(0, rows, 5_000):  # committed part by part, as a run does
            cache.put_many((k, entry, "glm-4.6") for k in keys[start : start + 5_000])
        put = (time.process_time() - started) / rows * 1e6
        figures.append(("cache store at commit (5,000-row transactions)", put))
        figures.append(("cache lookup, hit", cpu_us(rows, lambda i: cache.get(keys[i]))))
        cache.used.clear()
        cache.close()

    check = SchemaCheck(SCHEMA)
    figures.append(
        (
            "schema check, fastjsonschema (parse + validate)",
            cpu_us(rows, lambda i: check.read(answers[i])),
        )
    )
    figures.append(("  of which json.loads", cpu_us(rows, lambda i: json.loads(answers[i]))))
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        validator = jsonschema.Draft202012Validator(SCHEMA)
        objects = [json.loads(a) for a in answers]
        figures.append(
            (
                "jsonschema validate (for comparison, no parse)",
                cpu_us(rows, lambda i: validator.is_valid(objects[i])),
            )
        )

    width = max(len(name) for name, _ in figures)
    print(f"{rows} rows, CPU microseconds per row")
    for name, value in figures:
        print(f"  {name:<{width}}  {value:8.1f}")


if __name__ == "__main__":
    main()
