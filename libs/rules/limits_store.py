"""All SQL of the messaging-limit budget and the quality signals (psycopg ``%(name)s`` parameters).

A connection's portfolio is its ``portfolio_id``, or the connection alone when it has none; the portfolio's
override is the smallest ``messaging_limit`` of its connections, and its tier the one Meta reported last.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

from libs.events.outbox_store import INSERT_EVENTS
from libs.events.types import CONNECTION_STATUS

#: The connections of ``c``'s portfolio (``o``).
_SAME_PORTFOLIO = "(o.id = c.id OR (c.portfolio_id IS NOT NULL AND o.portfolio_id = c.portfolio_id))"

#: A connection's portfolio and what decides its limit.
PORTFOLIO = f"""
SELECT c.id, c.provider, c.portfolio_id,
  (SELECT min(o.messaging_limit) FROM connections o WHERE {_SAME_PORTFOLIO}) AS override,
  (SELECT o.messaging_tier FROM connections o WHERE {_SAME_PORTFOLIO} AND o.messaging_tier IS NOT NULL
   ORDER BY o.quality_updated_at DESC NULLS LAST, o.id DESC LIMIT 1) AS tier
FROM connections c WHERE c.id = %(id)s
"""

#: Recipients of some messages, and whether each one's customer-service window is open now.
TARGETS = """
SELECT m.id, m.recipient, COALESCE(w.last_inbound_at > now() - make_interval(secs => %(window_s)s), false)
FROM messages m
LEFT JOIN service_windows w ON w.connection_id = m.connection_id AND w.wa_id = m.recipient
WHERE m.id = ANY(%(ids)s)
ORDER BY m.id
"""

#: What Meta said of the Meta numbers matching ``%(phone_number_id)s`` or ``%(display)s`` (within WABA
#: ``%(waba_id)s`` when the connection knows its WABA): each value only when given. Returns each connection with its
#: values before and after.
APPLY_QUALITY = """
WITH old AS (
  SELECT id, quality_rating, messaging_tier, throughput_level FROM connections
  WHERE provider = 'meta'
    AND (phone_number_id = %(phone_number_id)s
         OR regexp_replace(display_phone_number, '[^0-9]', '', 'g') = %(display)s
         OR (%(whole_waba)s AND waba_id = %(waba_id)s))
    AND (waba_id IS NULL OR %(waba_id)s::text IS NULL OR waba_id = %(waba_id)s)
  FOR UPDATE
)
UPDATE connections c SET
  quality_rating = COALESCE(%(rating)s, c.quality_rating),
  messaging_tier = COALESCE(%(tier)s, c.messaging_tier),
  throughput_level = COALESCE(%(throughput)s, c.throughput_level),
  quality_event = COALESCE(%(event)s, c.quality_event),
  quality_updated_at = now(), updated_at = now()
FROM old o WHERE c.id = o.id
RETURNING c.id, c.company_id, c.status, c.portfolio_id, o.quality_rating AS old_rating,
          o.messaging_tier AS old_tier, o.throughput_level AS old_throughput
"""

#: ``connection.status`` for a connection whose status did not change but that needs attention (why: ``%(reason)s``).
ATTENTION_EVENT = f"""{INSERT_EVENTS}
SELECT c.company_id, '{CONNECTION_STATUS}', 'connection:' || c.id, now(),
       jsonb_build_object(
         'connection_id', c.id, 'company_id', c.company_id, 'provider', c.provider, 'status', c.status,
         'previous_status', c.status, 'reason', %(reason)s::text, 'timestamp', zapq_iso(now()))
FROM connections c WHERE c.id = %(id)s
"""

#: A connection of a portfolio key (``p-<portfolio id>`` or ``c-<connection id>``:
#: :func:`libs.rules.limits.portfolio_key`).
CONNECTION_OF_PORTFOLIO = """
SELECT id FROM connections
WHERE (%(portfolio_id)s::text IS NOT NULL AND portfolio_id = %(portfolio_id)s) OR id = %(connection_id)s::bigint
ORDER BY id LIMIT 1
"""

#: The Meta connections whose fields are read from the Graph API.
META_CONNECTIONS = (
    "SELECT id, company_id, phone_number_id, access_token, quality_rating, throughput_level, quality_event "
    "FROM connections "
    "WHERE provider = 'meta' AND phone_number_id IS NOT NULL AND (%(id)s::bigint IS NULL OR id = %(id)s) ORDER BY id"
)


def portfolio(session: Session, connection_id: int) -> dict[str, Any] | None:
    """:data:`PORTFOLIO` in the session's transaction."""
    row = session.connection().exec_driver_sql(PORTFOLIO, {"id": connection_id}).mappings().one_or_none()
    return None if row is None else dict(row)


async def portfolio_async(conn: AsyncConnection[Any], connection_id: int) -> dict[str, Any] | None:
    """:data:`PORTFOLIO` (the API)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(PORTFOLIO, {"id": connection_id})
    return await cursor.fetchone()


def targets(session: Session, message_ids: Sequence[int], window_s: int) -> list[tuple[int, str, bool]]:
    """``(id, recipient, window open)`` of ``message_ids``."""
    rows = session.connection().exec_driver_sql(TARGETS, {"ids": list(message_ids), "window_s": window_s})
    return [(int(i), str(r), bool(o)) for i, r, o in rows]


def apply_quality(session: Session, values: dict[str, Any]) -> list[dict[str, Any]]:
    """:data:`APPLY_QUALITY`; the connections changed, with their old values."""
    return [dict(row) for row in session.connection().exec_driver_sql(APPLY_QUALITY, values).mappings()]


def attention_event(session: Session, connection_id: int, reason: str) -> None:
    """Write :data:`ATTENTION_EVENT`."""
    session.connection().exec_driver_sql(ATTENTION_EVENT, {"id": connection_id, "reason": reason})


def meta_connections(session: Session, connection_id: int | None = None) -> list[dict[str, Any]]:
    """The Meta connections (one, or all) whose fields can be read from the Graph API."""
    rows = session.connection().exec_driver_sql(META_CONNECTIONS, {"id": connection_id}).mappings()
    return [dict(row) for row in rows]


def connection_of_portfolio(session: Session, key: str) -> int | None:
    """A connection of the portfolio ``key`` names, or ``None``."""
    kind, _, rest = key.partition("-")
    params = {
        "portfolio_id": rest if kind == "p" else None,
        "connection_id": int(rest) if kind == "c" and rest.isdigit() else None,
    }
    row = session.connection().exec_driver_sql(CONNECTION_OF_PORTFOLIO, params).one_or_none()
    return None if row is None else int(row[0])
