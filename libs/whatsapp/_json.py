"""Shared, private helpers for reading untrusted webhook JSON into typed values.

Two families of accessors, matching the parsers' one rule (*structure and identity strict, content lenient*):

* ``req_*`` — the value must be present and of the right type, else :class:`~libs.errors.ParseError` carrying
  the JSON path of the offending value (``entry[0].changes[1].value.messages[3].id``).
* ``opt_*`` — the value is returned when present with the right type, otherwise ``None``; a wrong type is
  treated like an absent key (the untouched dict is still kept in the parsed item's ``raw``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from libs.errors import ParseError

MAX_DEPTH = 64
"""Deepest nesting of objects/arrays accepted; real webhooks stay below ~12 (orjson refuses to dump > 254)."""

MAX_TIMESTAMP_DIGITS = 15
"""Longest decimal timestamp accepted (guards ``int()`` against giant digit strings)."""

JsonObject = dict[str, Any]


def load_object(payload: object) -> JsonObject:
    """Decode ``payload`` (raw JSON bytes/str, or an already decoded dict) into a bounded JSON object."""
    if isinstance(payload, bytes | bytearray | memoryview | str):
        try:
            data: object = orjson.loads(payload)
        except ValueError as exc:  # orjson.JSONDecodeError: bad JSON, bad UTF-8, nesting > 1024
            raise ParseError(f"invalid JSON: {exc}") from exc
    elif isinstance(payload, dict):
        data = payload
    else:
        raise ParseError(f"expected JSON bytes or a dict, got {type(payload).__name__}")
    if not isinstance(data, dict):
        raise ParseError(f"top level must be a JSON object, got {type_name(data)}")
    if not _shallow_text(payload):
        check_depth(data)
    return data


def _shallow_text(payload: object) -> bool:
    """True when raw JSON text cannot nest deeper than :data:`MAX_DEPTH`: it opens no more objects and arrays
    than that in all (a bracket inside a string counts too, so this only ever sends a body to the full walk)."""
    if isinstance(payload, str):
        return payload.count("{") + payload.count("[") <= MAX_DEPTH
    if isinstance(payload, bytes | bytearray):
        return payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH
    return False


def check_depth(data: object, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`ParseError` if objects/arrays nest deeper than ``limit`` (cycles count as too deep)."""
    # Depth-first with an explicit stack: no recursion, and a cyclic dict hits the limit after ``limit`` pops.
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ParseError(f"JSON nested deeper than {limit} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def type_name(value: object) -> str:
    """Name a decoded JSON value's type the way JSON would (for error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _got(obj: JsonObject, key: str) -> str:
    """Describe what was found at ``obj[key]`` for an error message."""
    return type_name(obj[key]) if key in obj else "missing"


def req_str(obj: JsonObject, key: str, path: str) -> str:
    """Return the non-empty string at ``obj[key]`` or raise :class:`ParseError` at ``path``."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        what = "empty string" if value == "" else _got(obj, key)
        raise ParseError(f"expected a non-empty string, got {what}", path=path)
    return value


def req_bool(obj: JsonObject, key: str, path: str) -> bool:
    """Return the boolean at ``obj[key]`` or raise :class:`ParseError` at ``path``."""
    value = obj.get(key)
    if not isinstance(value, bool):
        raise ParseError(f"expected a boolean, got {_got(obj, key)}", path=path)
    return value


def req_dict(obj: JsonObject, key: str, path: str) -> JsonObject:
    """Return the object at ``obj[key]`` or raise :class:`ParseError` at ``path``."""
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ParseError(f"expected an object, got {_got(obj, key)}", path=path)
    return value


def req_list(obj: JsonObject, key: str, path: str, *, missing_ok: bool = False) -> list[Any]:
    """Return the array at ``obj[key]`` (``[]`` when absent and ``missing_ok``) or raise at ``path``."""
    if key not in obj and missing_ok:
        return []
    value = obj.get(key)
    if not isinstance(value, list):
        raise ParseError(f"expected an array, got {_got(obj, key)}", path=path)
    return value


def iter_objects(items: list[Any], path: str) -> Iterator[tuple[str, JsonObject]]:
    """Yield ``(item_path, item)`` for every element, raising :class:`ParseError` on a non-object element."""
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise ParseError(f"expected an object, got {type_name(item)}", path=item_path)
        yield item_path, item


def req_timestamp(obj: JsonObject, key: str, path: str) -> int:
    """Return the unix-seconds timestamp at ``obj[key]`` (decimal string or integer) or raise at ``path``."""
    value = parse_timestamp(obj.get(key))
    if value is None:
        got = repr(obj[key])[:40] if key in obj else "missing"
        raise ParseError(f"expected a unix timestamp (digits), got {got}", path=path)
    return value


def parse_timestamp(value: object) -> int | None:
    """Read a non-negative unix timestamp from a digit string or an integer; ``None`` if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_TIMESTAMP_DIGITS:
        return int(value)
    return None


def opt_str(obj: object, key: str) -> str | None:
    """Return ``obj[key]`` if ``obj`` is an object and the value a string, else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def opt_int(obj: object, key: str) -> int | None:
    """Return ``obj[key]`` if ``obj`` is an object and the value an integer (not a boolean), else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def opt_bool(obj: object, key: str) -> bool | None:
    """Return ``obj[key]`` if ``obj`` is an object and the value a boolean, else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, bool) else None


def opt_dict(obj: object, key: str) -> JsonObject | None:
    """Return ``obj[key]`` if ``obj`` is an object and the value an object, else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None
