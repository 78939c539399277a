"""The names ``libs/ops/cli.py`` uses for the dead-letter ledger, kept until the CLI calls
:mod:`libs.deadletters.actions` itself (issue 19: the CLI becomes a package); nothing else imports this module.
"""

from __future__ import annotations

from typing import Any

from libs.deadletters.actions import get, list_rows, matching_ids, prune, purge, record, replay, replayable_message
from libs.deadletters.store import DeadLetterRow, Filter

__all__ = [
    "Filter",
    "as_dict",
    "get",
    "list_rows",
    "matching_ids",
    "prune",
    "purge",
    "record",
    "replay",
    "replayable_message",
]


def as_dict(row: DeadLetterRow, *, full: bool = False, max_error: int | None = None) -> dict[str, Any]:
    """:meth:`DeadLetterRow.as_dict`."""
    return row.as_dict(full=full, max_error=max_error)
