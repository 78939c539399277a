"""JSON whose strings hold lone UTF-16 surrogates (``"\\udaae"``): valid JSON, but no UTF-8 text can hold them.

orjson refuses such a document outright; Python's own parser reads it and keeps the surrogate, which then fails
every UTF-8 encode downstream (Postgres, Redis, logs). The API refuses such input with a reason (422, naming the
field); the webhook path replaces each lone surrogate with U+FFFD so a customer's message is never lost to one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

#: A lone (unpaired) surrogate in a decoded Python string; paired ones never survive decoding.
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUL = re.compile("\x00")

#: The replacement character a lone surrogate becomes on the lenient path.
REPLACEMENT = "\ufffd"


class NotJsonError(ValueError):
    """The bytes are not JSON at all (bad syntax or bad UTF-8)."""


def loads_keeping_surrogates(body: bytes) -> Any:
    """``body`` decoded: by orjson when it can, else by the standard parser (which keeps lone surrogates).

    Raises :class:`NotJsonError` when neither reads it (bad syntax, bad UTF-8 — a raw surrogate's UTF-8 bytes
    count as bad UTF-8).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # orjson's other refusals hold here too: NaN/Infinity, numbers out of a double's range
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotJsonError(str(exc)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def surrogate_paths(data: Any) -> list[str]:
    """The dotted paths (``template.name``, ``phones.3``) of every string, key included, holding a lone
    surrogate, printable (a surrogate in a key is shown as U+FFFD); ``[]`` for clean data."""
    return _paths_matching(data, _SURROGATE)


def nul_paths(data: Any) -> list[str]:
    """The dotted paths of every string, key included, holding U+0000 (which no Postgres text can hold)."""
    return _paths_matching(data, _NUL)


def _paths_matching(data: Any, pattern: re.Pattern[str]) -> list[str]:
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:  # iterative: bodies are bounded in size, not in depth
        path, node = stack.pop()
        if isinstance(node, str):
            if pattern.search(node):
                found.append(path or "body")
            continue
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and pattern.search(key):
                found.append(child)
            stack.append((child, value))
    return sorted(_SURROGATE.sub(REPLACEMENT, path) for path in found)


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, text)


def map_strings(data: Any, change: Callable[[str], str]) -> Any:
    """``data`` with ``change`` applied to every string and key (containers rebuilt in place)."""
    if isinstance(data, str):
        return change(data)
    stack: list[Any] = [data]
    while stack:  # iterative: a depth limit is checked later, on the changed value
        node = stack.pop()
        if not isinstance(node, dict | list):
            continue
        items: list[tuple[Any, Any]] = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        target: Any = node
        if isinstance(node, dict):
            node.clear()
        for key, value in items:
            if isinstance(value, str):
                value = change(value)
            elif isinstance(value, dict | list):
                stack.append(value)
            target[change(key) if isinstance(key, str) else key] = value
    return data
