"""The CLI package's imports go one way: no cycle among its modules, and nothing outside ``libs/cli`` (the API
above all) imports from it.

The graph is read from the source with :mod:`ast`, so it holds the imports inside functions too (zapq imports
heavy modules lazily), not only those that ran.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from libs.ops.processes import ROOT

CLI = "libs.cli"


def module_name(path: Path, root: Path) -> str:
    """``libs/cli/main.py`` → ``libs.cli.main``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that a module imports, anywhere in its body (``from p import m`` counts as
    importing ``p.m`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in known)
    return found


def import_graph(root: Path, packages: Iterable[str] = ("libs", "services")) -> dict[str, set[str]]:
    """Module → the project modules it imports, for every module under ``packages``."""
    paths = {module_name(p, root): p for package in packages for p in (root / package).rglob("*.py")}
    known = set(paths)
    return {
        name: imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known) - {name}
        for name, path in paths.items()
    }


def find_cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    """One import cycle among ``nodes`` (``[a, b, …, a]``), or ``None``."""
    state: dict[str, str] = {}  # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node] & nodes):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(nodes):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def in_package(name: str, package: str) -> bool:
    """Whether module ``name`` is ``package`` or inside it."""
    return name == package or name.startswith(f"{package}.")


def test_the_cli_modules_import_each_other_without_a_cycle() -> None:
    # Given the import graph of libs/ and services/
    graph = import_graph(ROOT)
    cli = {name for name in graph if in_package(name, CLI)}
    # Then the CLI is there, one module per group of commands, and its imports form no cycle
    assert {f"{CLI}.{m}" for m in ("main", "output", "api", "dlq", "stats", "campaign", "send")} <= cli
    assert find_cycle(graph, cli) is None


def test_nothing_outside_the_cli_imports_from_it() -> None:
    # Given the import graph of libs/ and services/
    graph = import_graph(ROOT)
    # Then no module outside libs/cli imports a CLI module: the API above all, which shares lower helpers
    # (libs.timeparse) instead
    api = {name: sorted(t for t in targets if in_package(t, CLI)) for name, targets in graph.items()}
    assert {name: targets for name, targets in api.items() if in_package(name, "libs.api") and targets} == {}
    outside = {name: targets for name, targets in api.items() if targets and not in_package(name, CLI)}
    assert outside == {}


def test_the_checker_finds_a_cycle() -> None:
    # Given a graph where a → b → c → a, and d outside it
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    # Then the cycle is found, and none once it is broken
    assert find_cycle(graph, set(graph)) == ["a", "b", "c", "a"]
    graph["c"] = {"d"}
    assert find_cycle(graph, set(graph)) is None
