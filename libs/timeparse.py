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


#: What the API's ``since`` accepts: a duration of up to five digits, or a full ISO date-time from year 1 (the
#: published schema's pattern, ``libs/api/query.py``: the CLI is laxer).
SINCE_PATTERN = (
    r"^\s*[0-9]{1,5}\s*[smhdw]\s*$"
    r"|^(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_SINCE = re.compile(SINCE_PATTERN)


class TimeParseError(ValueError):
    """A duration or time that does not parse; the message says what was expected."""


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` → timedelta."""
    match = DURATION.match(text.strip())
    if not match:
        raise TimeParseError(f"bad duration {text!r}: use a number and s/m/h/d/w, e.g. 90d")
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def parse_since_text(text: str) -> dt.datetime:
    """:func:`parse_since` for the API: only what :data:`SINCE_PATTERN` allows."""
    if not _SINCE.search(text):
        raise TimeParseError(f"bad since {text!r}: give a duration (2h, 30d) or an ISO date-time")
    return parse_time(text, option="since")


def parse_time(text: str, *, ahead: bool = False, option: str = "--since") -> dt.datetime:
    """An ISO timestamp (UTC when it has no offset) or a duration from now: ago (``2h`` = two hours ago), or
    ``ahead`` (``30d`` = in thirty days)."""
    try:
        delta = parse_duration(text)
        return dt.datetime.now(dt.UTC) + (delta if ahead else -delta)
    except TimeParseError:
        pass
    except OverflowError:  # a duration past year 1 or 9999
        raise TimeParseError(f"bad {option} {text!r}: that is further than a datetime reaches") from None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeParseError(f"bad {option} {text!r}: give a duration (2h, 30d) or an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_since(text: str) -> dt.datetime:
    """An ISO timestamp (UTC when it has no offset) or a duration ago (``2h`` = two hours ago)."""
    return parse_time(text)
