"""No import cycle among stream_processors modules: every import (module level, inside functions,
under TYPE_CHECKING) read with ast, and the graph's strongly connected components computed.

The graph is read in a child interpreter: CPython 3.11's ast.parse can fail with "AST constructor
recursion depth mismatch" after another test (Hypothesis) has changed the recursion limit."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def import_graph(package: str = "stream_processors") -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            component.append(v)
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph_of_a_fresh_interpreter() -> dict[str, set[str]]:
    code = (
        "import json; from tests.unit.stream_processors.test_import_graph import import_graph as g; "
        "print(json.dumps({k: sorted(v) for k, v in g().items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {k: set(v) for k, v in json.loads(out.stdout).items()}


def test_no_import_cycle() -> None:
    graph = graph_of_a_fresh_interpreter()
    assert "stream_processors.store.base" in graph
    assert cycles(graph) == []


def test_readers_depend_on_the_interface_not_the_worker() -> None:
    graph = graph_of_a_fresh_interpreter()
    for reader in (
        "monitoring",
        "web",
        "optimizer.service",
        "optimizer.evaluate",
        "store.base",
        "store.memory",
    ):
        assert "stream_processors.worker" not in graph[f"stream_processors.{reader}"], reader
    for reader in ("monitoring", "web", "store.memory", "optimizer.evaluate"):
        assert "stream_processors.store.redis_lua" not in graph[f"stream_processors.{reader}"], reader


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
