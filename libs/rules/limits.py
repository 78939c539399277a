"""Which portfolio a connection's budget belongs to, and that portfolio's messaging limit.

The limit of a portfolio is, in order: ``ZAPQ_MESSAGING_LIMIT`` when set (every portfolio), else the smallest
``messaging_limit`` override of its connections, else the tier Meta reported last (the Graph API's
``whatsapp_business_manager_messaging_limit``, a ``phone_number_quality_update``'s ``current_limit`` or a
``business_capability_update``'s ``max_daily_conversations_per_business``), else unknown: counted, never held
(a number zapq knows nothing about is not throttled on a guess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from libs.rules.budget import UNLIMITED

#: ``TIER_250``, ``TIER_1K``, ``TIER_100K``; Meta calls the values opaque, so anything else is unknown.
TIER = re.compile(r"^TIER_(\d+)(K?)$")
UNLIMITED_TIERS = frozenset({"TIER_UNLIMITED", "UNLIMITED"})


def tier_limit(tier: str | int | None) -> int | None:
    """A tier as Meta spells it → recipients per 24 h (``UNLIMITED``: -1; ``None``: unknown or not set)."""
    if tier is None or isinstance(tier, bool):
        return None
    if isinstance(tier, int):
        return tier if tier >= 0 else None
    text = tier.strip().upper()
    if text.isdigit():
        return int(text)
    if text in UNLIMITED_TIERS:
        return UNLIMITED
    match = TIER.match(text)
    if match is None:
        return None
    return int(match[1]) * (1000 if match[2] else 1)


def portfolio_key(connection_id: int, portfolio_id: str | None) -> str:
    """The budget's name for a portfolio: ``p-<portfolio id>``, or ``c-<connection id>`` for a connection alone."""
    return f"p-{portfolio_id}" if portfolio_id else f"c-{connection_id}"


@dataclass(frozen=True)
class Portfolio:
    """A connection's budget: the portfolio's key and limit (-1: unlimited or unknown)."""

    key: str
    limit: int
    #: Where the limit came from: ``setting``, ``connection``, ``meta`` or ``unknown``.
    source: str


def resolve(row: dict[str, Any] | None, override: int = 0) -> Portfolio | None:
    """The budget of a :data:`libs.rules.limits_store.PORTFOLIO` row; ``None`` when there is none (a Baileys
    connection, or no connection). ``override``: ``ZAPQ_MESSAGING_LIMIT`` (0: not set)."""
    if row is None or row["provider"] != "meta":
        return None
    key = portfolio_key(int(row["id"]), row["portfolio_id"])
    if override > 0:
        return Portfolio(key, override, "setting")
    if row["override"] is not None:
        return Portfolio(key, int(row["override"]), "connection")
    limit = tier_limit(row["tier"])
    if limit is not None:
        return Portfolio(key, limit, "meta")
    return Portfolio(key, UNLIMITED, "unknown")
