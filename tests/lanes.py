"""The two lanes of the test suite: in-process tests, and tests that start another process.

    make test-fast        # pytest -m "not subprocess and not slow": in-process, under a minute
    pytest                # everything (what CI runs)

A test is in the ``subprocess`` lane when it starts another process: the zbatch console script,
zbatch under tests/faults.py, a fresh interpreter, a Dask cluster's workers. The lane is found,
not listed, so a new test file lands in the right lane by itself: a test is marked when its
body, a fixture it uses, or a function it calls (of its own file, of conftest.py, or imported
from another file in tests/, at any depth) names one of :data:`STARTS_A_PROCESS`, or passes
``cluster=``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

# Names that start another process (conftest.py's runners, subprocess, Dask's LocalCluster).
STARTS_A_PROCESS = frozenset(
    {
        "run_zbatch",
        "run_against",
        "start_zbatch",
        "run_wrapped",
        "subprocess",
        "Popen",
        "local_cluster",
        "LocalCluster",
        "heavy_imports",
    }
)


def _names(node: ast.AST) -> set[str]:
    """The names a piece of code uses: variables, attributes, keyword arguments."""
    found = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
        elif isinstance(child, ast.keyword) and child.arg == "cluster":
            found.add("cluster=")
    return found


# Files whose imports are being followed: two test files may import each other.
_visiting: set[Path] = set()


@functools.cache
def starters(path: Path) -> frozenset[str]:
    """The functions (tests, fixtures, helpers) of a test file that start another process,
    with those it imports from other files in tests/ that do."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {
        node.name: _names(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    starting = {"cluster=", *STARTS_A_PROCESS}
    _visiting.add(path)
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        source = path.with_name(f"{node.module}.py")
        if source.exists() and source not in _visiting:
            imported = starters(source)
            starting |= {
                alias.asname or alias.name for alias in node.names if alias.name in imported
            }
    _visiting.discard(path)
    changed = True
    while changed:  # a helper that calls a helper that starts one starts one
        grown = starting | {name for name, uses in functions.items() if uses & starting}
        changed = grown != starting
        starting = grown
    return frozenset(starting)


def mark(items: list[pytest.Item]) -> None:
    """Put each collected test that starts another process in the ``subprocess`` lane."""
    for item in items:
        function = getattr(item, "function", None)
        if function is None:
            continue
        path = Path(item.path)
        starting = starters(path) | starters(Path(__file__).with_name("conftest.py"))
        used = {function.__name__, *getattr(item, "fixturenames", ())}
        if used & starting:
            item.add_marker(pytest.mark.subprocess)
