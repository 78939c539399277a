"""SQL lives in store modules only (issue 19: "one store module per aggregate").

Handlers (API routes, CLI commands, actors, periodic jobs) and domain actions call store functions; only a
store (``*/store.py``, or ``*/<part>_store.py`` for one part of an aggregate's store) and the migrations hold
SQL text, and only ``libs/db`` and the stores build SQLAlchemy statements. Each exception below says why it is one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.ops.processes import ROOT

#: A statement keyword followed by a space, in upper case as every statement of zapq is written.
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s")
#: SQLAlchemy's statement builders.
BUILDERS = frozenset({"select", "insert", "update", "delete", "text"})

#: Allowed to hold SQL besides ``*/store.py``, with the reason.
ALLOWED: dict[str, str] = {
    "libs/db/migrate.py": "creates the database itself (CREATE DATABASE), before any store can run",
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for top in ("libs", "services"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("libs/db/migrations/"):
                continue
            yield rel, ast.parse(path.read_text(), filename=rel)


def _allowed(rel: str) -> bool:
    name = Path(rel).name
    return name == "store.py" or name.endswith("_store.py") or rel in ALLOWED or rel.startswith("libs/db/")


def _docstrings(tree: ast.Module) -> set[int]:
    """``id()`` of every docstring node (prose may name statements)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def sql_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, text)`` of every string literal (f-string parts included) that holds a SQL statement."""
    docstrings = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        if literal and SQL.search(node.value):
            hits.append((node.lineno, node.value.strip().splitlines()[0][:80]))
    return hits


def statement_builders(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, name)`` of every SQLAlchemy statement builder imported."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            hits += [(node.lineno, alias.name) for alias in node.names if alias.name in BUILDERS]
    return hits


def test_sql_is_only_in_store_modules() -> None:
    # Given every module of libs/ and services/ but the stores, the migrations and the listed exceptions
    found = {
        rel: hits
        for rel, tree in _modules()
        if not _allowed(rel) and (hits := sql_literals(tree) + statement_builders(tree))
    }
    # Then none holds a SQL statement or builds one
    assert found == {}, "SQL outside the store modules (move it into the aggregate's store):\n" + "\n".join(
        f"  {rel}:{line}: {text}" for rel, hits in found.items() for line, text in hits
    )


@pytest.mark.parametrize("rel", sorted(ALLOWED))
def test_every_exception_still_needs_to_be_one(rel: str) -> None:
    # An exception whose module no longer holds SQL (or no longer exists) is dropped from the list
    path = ROOT / rel
    assert path.exists(), f"{rel} is gone: drop it from ALLOWED"
    tree = ast.parse(path.read_text(), filename=rel)
    assert sql_literals(tree) or statement_builders(tree), f"{rel} holds no SQL any more: drop it from ALLOWED"


def test_the_check_finds_sql() -> None:
    # Given a handler with an inline statement, a docstring that names one, and an ORM query
    tree = ast.parse(
        '"""UPDATE … WHERE in prose is fine."""\n'
        "from sqlalchemy import select\n"
        'STATEMENT = f"SELECT {COLUMNS} FROM campaigns WHERE id = %s"\n'
    )
    # Then the statement and the builder are found, the docstring is not
    assert [line for line, _ in sql_literals(tree)] == [3]
    assert statement_builders(tree) == [(2, "select")]
