"""The import graph of ``libs/`` has no cycle, and lower layers do not import higher ones.

Every import counts, also those inside functions (a lazy import hides a cycle from Python, not from a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

from libs.ops.processes import ROOT

LIBS = ROOT / "libs"
#: Cycles known and being removed elsewhere: (sorted members) → why. Drop an entry once its cycle is gone.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the ``libs`` modules it imports (a ``from package import name`` of a submodule counts it)."""
    paths = {module_name(p): p for p in LIBS.rglob("*.py") if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_libs_has_no_import_cycle() -> None:
    # Given the import graph of libs/
    graph = import_graph()
    # Then no modules import each other, directly or around a circle (but for the known ones)
    assert [cycle for cycle in cycles(graph) if cycle not in KNOWN_CYCLES] == []


def test_the_cycle_finder_finds_cycles() -> None:
    # Given a graph with a circle of three and a self-standing module
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    # Then the circle is found, and nothing else
    assert cycles(graph) == [("a", "b", "c")]


def test_middleware_imports_nothing_from_ops() -> None:
    # Given the Dramatiq middleware modules
    graph = import_graph()
    # Then none imports operations code (a higher layer)
    upward = {m: sorted(t for t in targets if t.startswith("libs.ops")) for m, targets in graph.items()}
    assert {m: t for m, t in upward.items() if m.startswith("libs.middleware") and t} == {}
