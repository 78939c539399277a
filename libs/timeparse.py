"""Durations and "since" times as people type them: ``90d``, ``12h``, ``30m``, ``45s``, ``2w``, or an ISO time.

Shared by the command line (``zapq dlq list --since 2h``, ``zapq dlq purge --older-than 90d``) and the API
(``GET /api/dead-letters?since=2h``); both turn :class:`TimeParseError` into their own "bad input" answer
(exit code 2, HTTP 400) with its message.
"""

from __future__ import annotations

import datetime as dt
import re

DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
#: Seconds per unit of a duration.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TimeParseError(ValueError):
    """A duration or time that does not parse; the message says what was expected."""


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` → timedelta."""
    match = DURATION.match(text.strip())
    if not match:
        raise TimeParseError(f"bad duration {text!r}: use a number and s/m/h/d/w, e.g. 90d")
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def parse_time(text: str, *, ahead: bool = False, option: str = "--since") -> dt.datetime:
    """An ISO timestamp (UTC when it has no offset) or a duration from now: ago (``2h`` = two hours ago), or
    ``ahead`` (``30d`` = in thirty days)."""
    try:
        delta = parse_duration(text)
        return dt.datetime.now(dt.UTC) + (delta if ahead else -delta)
    except TimeParseError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeParseError(f"bad {option} {text!r}: give a duration (2h, 30d) or an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_since(text: str) -> dt.datetime:
    """An ISO timestamp (UTC when it has no offset) or a duration ago (``2h`` = two hours ago)."""
    return parse_time(text)
