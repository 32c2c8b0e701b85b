# One command per check; `make check` runs them all (what CI runs).
.PHONY: install test test-fast lint typecheck check bench

install:
	python3 -m venv .venv && .venv/bin/pip install -e ".[test,s3]"

test:
	.venv/bin/pytest

# The in-process lane, for the edit loop (under a minute): no test that starts another process.
test-fast:
	.venv/bin/pytest -q -m "not e2e and not subprocess and not slow"

lint:
	.venv/bin/ruff check zbatch tests bench
	.venv/bin/ruff format --check zbatch tests bench

typecheck:
	.venv/bin/mypy

check: lint typecheck test

bench:
	.venv/bin/python bench/throughput.py --latency-case
	.venv/bin/python bench/overhead.py
	.venv/bin/python bench/cancel_check.py
	.venv/bin/python bench/limits.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/startup.py
