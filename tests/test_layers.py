"""The package's import graph: no cycle, no arrow up a layer, a top level one can take in.

Every ``import`` in ``zbatch/`` is read with ``ast``, at module level and inside functions alike
(a lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` are for types only
and are left out. The layers are written out below, as data: a new module must be given one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zbatch"

# Bottom to top. A module may import its own layer and the ones below, never one above. An entry
# names a module, or a folder with everything in it ("zbatch.store.").
LAYERS: list[tuple[str, list[str]]] = [
    (
        "leaves: knowledge everything may read",
        [
            "zbatch._version",
            "zbatch.errors",
            "zbatch.outcome",
            "zbatch.pricing",
            "zbatch.idset",
            "zbatch.answers",
            "zbatch.answers.checks",
            "zbatch.schema",
            "zbatch.urls",
            "zbatch.shard",
            "zbatch.limits",
            "zbatch.rejections",
            "zbatch.answers.schema",
            "zbatch.transport",
            "zbatch.transport.http11",
            "zbatch.transport.aio",
            "zbatch.job.keys",
            "zbatch.store.layout",
            "zbatch.ops.secrets",
        ],
    ),
    (
        "the kernel: settings, inputs, providers, the OUTDIR, figures, the HTTP client, ops",
        [
            "zbatch.job",
            "zbatch.job.",
            "zbatch.providers",
            "zbatch.providers.",
            "zbatch.readers",
            "zbatch.readers.",
            "zbatch.source",
            "zbatch.prompt",
            "zbatch.store",
            "zbatch.store.",
            "zbatch.stats",
            "zbatch.budget",
            "zbatch.progress",
            "zbatch.testing",
            "zbatch.simulate",
            "zbatch.client",
            # batch mode's ledger and file names: the OUTDIR reads them (open batches hold rows)
            "zbatch.batch.ledger",
            "zbatch.batch.files",
            "zbatch.answers.reading",
            "zbatch.ops",
            "zbatch.ops.",
        ],
    ),
    ("a row's life", ["zbatch.pipeline"]),
    (
        "what every way of dispatching is given and implements",
        [
            "zbatch.dispatch",
            "zbatch.execution",
            "zbatch.execution.options",
            "zbatch.execution.runlog",
        ],
    ),
    (
        "the ways of dispatching",
        ["zbatch.online", "zbatch.online.", "zbatch.batch", "zbatch.batch."],
    ),
    (
        "one run assembled; an OUTDIR read back",
        ["zbatch.execution.setup", "zbatch.execution.plan", "zbatch.results", "zbatch.results."],
    ),
    ("a run on a cluster", ["zbatch.cluster", "zbatch.cluster."]),
    ("the use cases", ["zbatch.api"]),
    ("the faces", ["zbatch", "zbatch.__main__", "zbatch.cli", "zbatch.cli."]),
]

# Imports inside functions that close a cycle on purpose, with why.
DOCUMENTED_CYCLES = {
    # Job.from_toml is a convenience constructor on the Job that job files build.
    ("zbatch.job.settings", "zbatch.job.file"),
    # Parts reads a compaction's staged part back (issue 20, merged as it came): compaction
    # builds on Parts. To open: move staged_view beside Parts, or the reading into compaction.
    ("zbatch.store.parts", "zbatch.store.compaction"),
}

# About 35 (issue 21): the families in folders, a flat kernel; a new module of a family goes in
# its folder.
TOP_LEVEL_NAMES = 36


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _type_checking(child):
            for node in child.orelse:
                yield from _imports(ast.Module(body=[node], type_ignores=[]))
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _imports(child)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The zbatch modules that module ``name`` imports (``from . import x`` counts as x)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
            continue
        if node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        for alias in node.names:
            inner = f"{target}.{alias.name}"
            found.add(inner if inner in known else target)
    return (found & known) - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def layer_of(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        for entry in members:
            if module == entry or (entry.endswith(".") and module.startswith(entry)):
                return index
    raise LookupError(module)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_every_kind_of_import(graph: dict[str, set[str]]) -> None:
    """The reader sees a relative import, an import of a module from its package, and an
    import inside a function, and leaves out what only type checking imports."""
    assert "zbatch.job.settings" in graph["zbatch.pipeline"]  # from .job.settings import Job
    assert "zbatch.prompt" in graph["zbatch.pipeline"]  # from . import prompt
    assert "zbatch.job.file" in graph["zbatch.job.settings"]  # inside Job.from_toml
    assert "zbatch.execution.setup" in graph["zbatch.api"]  # inside arun
    assert "zbatch.execution.setup" not in graph["zbatch.cluster"]  # nothing there
    assert "zbatch.job.settings" not in graph["zbatch.job.rules"]  # under TYPE_CHECKING


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    """No two modules import each other, directly or round a loop, except the documented
    convenience constructor."""
    pruned = {
        name: {target for target in targets if (name, target) not in DOCUMENTED_CYCLES}
        for name, targets in graph.items()
    }
    assert cycles(pruned) == []


def test_the_documented_cycles_are_still_there(graph: dict[str, set[str]]) -> None:
    """An exception that is no longer needed is taken out of the list."""
    for name, target in DOCUMENTED_CYCLES:
        assert target in graph[name]


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    unplaced = []
    for name in sorted(graph):
        try:
            layer_of(name)
        except LookupError:
            unplaced.append(name)
    assert unplaced == [], "add these to LAYERS in tests/test_layers.py"


def test_no_module_imports_a_higher_layer(graph: dict[str, set[str]]) -> None:
    """Data flows one way: settings and rows at the bottom, the faces at the top."""
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_top_level_can_be_taken_in_at_a_glance() -> None:
    names = [p.name for p in PACKAGE.iterdir() if p.name not in ("__pycache__", "py.typed")]
    assert len(names) <= TOP_LEVEL_NAMES, sorted(names)


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a loop through three modules is reported."""
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(loop) == [["a", "b", "c"]]
