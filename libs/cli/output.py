"""What every ``zapq`` command shares: exit codes, the usage error, and printing a result as a table, as
``key: value`` lines or as JSON.

Exit codes: 0 success, 1 operation failed, 2 bad usage or input (argparse's convention), 3 not found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3

#: Characters of a value a table shows (the column is no wider).
TABLE_CELL_CHARS = 60


class UsageError(Exception):
    """Bad input on the command line (exit code 2)."""


def print_result(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` as indented JSON (``--json``), else as ``render(data)``."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render(data))


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as columns under upper-case headers, each value cut to :data:`TABLE_CELL_CHARS`."""
    if not rows:
        return "(none)"
    cells = [[(str(r[c]) if r.get(c) is not None else "")[:TABLE_CELL_CHARS] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def key_values(data: dict[str, Any]) -> str:
    """``key: value`` lines, one per item."""
    return "\n".join(f"{k}: {v}" for k, v in data.items())
