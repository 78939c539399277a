"""Keeping the budgets' limits current: from the connections (after an operator's change or a webhook) and from
Meta's Graph API (a number's fields read on demand or on the scheduler's hourly tick).

* :func:`refresh_limits` — every minute (the scheduler): the limit of each portfolio with campaign sends waiting
  for budget is read again from Postgres (:mod:`libs.rules.limits`) and written where the release script reads
  it, so a raised tier, a new override or ``ZAPQ_MESSAGING_LIMIT`` frees waiting sends within a minute.
* :func:`refresh_from_meta` — ``zapq connection limits --refresh`` and the hourly tick: each Meta number's
  ``whatsapp_business_manager_messaging_limit``, ``quality_rating`` and ``throughput`` from the Graph API, applied
  as a quality update (:mod:`libs.rules.quality`: a number newly rated RED or downgraded pauses its campaigns).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import redis

from libs.db.engine import Database
from libs.errors import ProviderError
from libs.providers.meta_fields import read_number_fields
from libs.rules import limits, limits_store, quality
from libs.rules.budget import Budget
from libs.secrets import Secrets
from libs.whatsapp.meta_account import AccountUpdate

logger = logging.getLogger(__name__)

GRAPH_FIELD = "graph_fields"


def refresh_limits(db: Database, client: redis.Redis, budget: Budget) -> dict[str, int]:
    """Write the current limit of every portfolio with waiting sends; portfolio → limit."""
    found: Any = client.smembers(budget.names.portfolios)
    keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)
    written: dict[str, int] = {}
    with db.session() as session:
        for key in keys:
            connection_id = limits_store.connection_of_portfolio(session, key)
            portfolio = None
            if connection_id is not None:
                portfolio = limits.resolve(limits_store.portfolio(session, connection_id), budget.limit_override)
            if portfolio is not None:
                budget.set_limit(client, key, portfolio.limit)
                written[key] = portfolio.limit
    return written


def report(db: Database, client: redis.Redis, budget: Budget, connection_id: int | None = None) -> list[dict[str, Any]]:
    """Each Meta connection's budget (``zapq limits``): its portfolio, limit and where it came from, what Meta
    said of the number, recipients reached in the last 24 h and campaign sends waiting."""
    rows: list[dict[str, Any]] = []
    with db.session() as session:
        for connection in limits_store.meta_connections(session, connection_id):
            found = limits_store.portfolio(session, connection["id"])
            portfolio = limits.resolve(found, budget.limit_override)
            if portfolio is None or found is None:
                continue
            rows.append(
                {
                    "connection": connection["id"],
                    "company": connection["company_id"],
                    "portfolio": portfolio.key,
                    "limit": "unlimited" if portfolio.limit < 0 else portfolio.limit,
                    "source": portfolio.source,
                    "tier": found["tier"],
                    "quality": connection["quality_rating"],
                    "throughput": connection["throughput_level"],
                    "last_event": connection["quality_event"],
                }
            )
    for row in rows:
        row["reached_24h"] = budget.reached(client, row["portfolio"])[0]
        row["waiting"] = budget.waiting_in(client, row["portfolio"])
    return rows


def refresh_from_meta(
    db: Database,
    http: httpx.Client,
    *,
    graph_url: str,
    api_version: str,
    secrets: Secrets,
    connection_id: int | None = None,
) -> list[dict[str, Any]]:
    """Read each Meta connection's fields (one, or all) and apply them; per connection its fields or ``error``."""
    with db.session() as session:
        rows = limits_store.meta_connections(session, connection_id)
    results: list[dict[str, Any]] = []
    for row in rows:
        try:
            fields = read_number_fields(
                http,
                graph_url=graph_url,
                api_version=api_version,
                phone_number_id=row["phone_number_id"],
                access_token=secrets.decrypt_optional(row["access_token"]) or "",
            )
        except ProviderError as exc:
            logger.warning("connection %s: Meta's fields could not be read: %s", row["id"], type(exc).__name__)
            results.append({"id": row["id"], "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        update = AccountUpdate(
            GRAPH_FIELD,
            "",
            phone_number_id=row["phone_number_id"],
            current_limit=fields.messaging_tier,
            quality_rating=fields.quality_rating,
            throughput_level=fields.throughput_level,
        )
        with db.session() as session:
            outcome = quality.apply_account_updates(session, [update])
        quality.report(outcome.alerts)
        results.append(
            {
                "id": row["id"],
                "messaging_tier": fields.messaging_tier,
                "quality_rating": fields.quality_rating,
                "throughput_level": fields.throughput_level,
                "flagged": outcome.flagged.get(int(row["id"])),
            }
        )
    return results
