"""Every Redis key is named in ``libs/keys.py``: no key literal anywhere else in ``libs/`` and ``services/``, none
in the Lua scripts (they get their keys and key prefixes from Python)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from libs import keys, lua
from libs.ops.processes import ROOT

KEYS_MODULE = ROOT / "libs" / "keys.py"
#: Spellings that only a key has: Dramatiq's suffixes and sets, zapq's own prefix.
KEY_SPELLING = re.compile(r"__acks__|__heartbeats__|\.msgs\b|\.DQ\b|\.XQ\b|(^|:)zapq:\S")
#: An f-string starting with a namespace or a key prefix builds a key.
KEY_BUILDER = re.compile(r"namespace|prefix")
#: A quoted string in Lua.
LUA_STRING = re.compile(r"""'([^'\n]*)'|"([^"\n]*)\"""")


def python_files() -> Iterator[Path]:
    for folder in ("libs", "services"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != KEYS_MODULE and "migrations" not in path.parts:
                yield path


def docstrings(tree: ast.AST) -> set[int]:
    """``id()`` of every docstring constant in ``tree``."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def key_literals(path: Path) -> list[str]:
    """``line: text`` of each string in ``path`` that spells or builds a Redis key."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = docstrings(tree)
    hits: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if KEY_SPELLING.search(node.value):
                hits.append(f"{node.lineno}: {node.value[:80]!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.FormattedValue) and KEY_BUILDER.search(ast.unparse(first.value)):
                hits.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return hits


def lua_key_literals(text: str) -> list[str]:
    """Strings of a Lua script that look like a key or a piece of one (a ``:`` separator, Dramatiq's spelling)."""
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    strings = [single or double for single, double in LUA_STRING.findall(code)]
    return [s for s in strings if ":" in s or KEY_SPELLING.search(s)]


def test_no_redis_key_is_spelled_outside_the_keys_module() -> None:
    # Given every Python module of libs/ and services/ but libs/keys.py
    found = {str(path.relative_to(ROOT)): hits for path in python_files() if (hits := key_literals(path))}
    # Then none of them spells or builds a Redis key
    assert found == {}


def test_no_lua_script_spells_a_key() -> None:
    # Given every Lua script zapq ships
    found = {name: hits for name in lua.names() if (hits := lua_key_literals(lua.source(name)))}
    # Then none of them spells a key or a piece of one: they come from libs/keys.py through KEYS / ARGV
    assert found == {}


def test_the_checks_catch_what_they_look_for() -> None:
    # Given code that spells keys the ways the checks look for
    sample = ROOT / "tests" / "_sample_keys.py"
    sample.write_text(
        '"""Docstrings may name ``<q>.XQ`` and ``__acks__``."""\n'
        'def f(namespace, q, prefix):\n    return [f"{namespace}:{q}", "x.msgs", f"{prefix}ring", "a:zapq:b"]\n'
    )
    try:
        hits = key_literals(sample)
    finally:
        sample.unlink()
    # Then each is found, and the docstring is not
    assert len(hits) == 4, hits
    assert lua_key_literals("local k = ns .. ':' .. q -- a ':' in a comment\nreturn 'TIME'") == [":"]


def test_dramatiq_layout_spelled_by_the_keys_module() -> None:
    # Given the keys of a namespace
    broker, lifecycle = keys.BrokerKeys("ns"), keys.LifecycleKeys("ns")
    # Then they follow Dramatiq's dispatch.lua and zapq's <ns>:zapq: prefix
    assert broker.queue("q") == "ns:q" and broker.messages("q") == "ns:q.msgs"
    assert broker.delayed_messages("q") == "ns:q.DQ.msgs"
    assert broker.dead("q") == "ns:q.XQ" and broker.dead_messages("q") == "ns:q.XQ.msgs"
    assert broker.acks("w1", "q") == "ns:__acks__.w1.q" == broker.acks_prefix + "w1" + broker.acks_suffix("q")
    assert broker.heartbeats == "ns:__heartbeats__"
    assert lifecycle.stats("q", 7) == lifecycle.stats_of("q") + "7" == "ns:zapq:stats:q:7"
    assert keys.DeliveryKeys("ns").count("m") == "ns:zapq:deliveries:m"
