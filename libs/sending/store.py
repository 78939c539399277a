"""SQL of the send path (psycopg async, autocommit): each statement is one idempotent state transition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from libs.events import outbox_store as events
from libs.rules.store import WINDOW_SECONDS

#: Which of the given holds still hold (psycopg parameters; run by the sender's pool and the scheduler's engine).
STILL_HELD = """
SELECT 'connection:' || id FROM connections WHERE id = ANY(%(connections)b::bigint[]) AND status = 'inactive'
UNION ALL
SELECT 'campaign:' || id FROM campaigns WHERE id = ANY(%(campaigns)b::bigint[]) AND status = 'paused'
"""


#: Whether the customer-service window lets the claimed message go (``window_open``: NULL when the rule does
#: not apply — a template, a Baileys connection, ``service_window = 'off'``) and when it closes / closed.
WINDOW_APPLIES = "c.provider = 'meta' AND c.service_window = 'enforce' AND m.type <> 'template'"
WINDOW_CHECK = f"""CASE WHEN {WINDOW_APPLIES} THEN COALESCE((
            SELECT w.last_inbound_at > now() - make_interval(secs => %(window_s)s) FROM service_windows w
            WHERE w.connection_id = c.id AND w.wa_id = m.recipient), false) END AS window_open,
          CASE WHEN {WINDOW_APPLIES} THEN (
            SELECT w.last_inbound_at + make_interval(secs => %(window_s)s) FROM service_windows w
            WHERE w.connection_id = c.id AND w.wa_id = m.recipient) END AS window_closes_at"""

#: Take queued messages (or ones whose previous attempt ended ambiguously long enough ago) for sending.
#: The rows are found by id only: ``m.connection_id + 0`` keeps the planner from reaching them through their
#: connection. With statistics that still counted a handful of connections and few unsent messages, the prepared
#: statement's generic plan walked ``uq_messages_connection_external_id`` (connection, external_id IS NULL) for
#: every connection — the whole unsent backlog — and filtered by id: 8,348 buffers to claim 5 rows in the peak,
#: three times the CPU per row of the primary-key plan (reproduced: 6,760 buffers for 20 rows; with ``+ 0``, 623).
CLAIM = f"""
UPDATE messages AS m
SET status = 'sending', sending_at = now(), attempts = m.attempts + 1, updated_at = now()
FROM connections AS c
WHERE m.id = ANY(%(ids)s) AND c.id = m.connection_id + 0 AND m.direction = 'out' AND m.external_id IS NULL
  AND c.status = 'active'
  AND (m.status = 'queued'
       OR (m.status = 'sending' AND m.sending_at < now() - make_interval(secs => %(reconcile_s)s)))
  AND NOT EXISTS (SELECT 1 FROM campaigns k WHERE k.id = m.campaign_id AND k.status IN ('paused', 'cancelled'))
RETURNING m.id, m.company_id, m.recipient, m.type, m.body, m.payload, m.priority, m.campaign_id, m.attempts,
          c.id AS connection_id, c.provider, c.phone_number_id, c.access_token, c.bridge_url,
          c.bridge_instance, c.bridge_api_key, c.rate_per_second,
          {WINDOW_CHECK}
"""

#: Why a message could not be claimed.
INSPECT = """
SELECT m.status, m.external_id, m.direction, m.priority, m.campaign_id, m.company_id, m.connection_id,
       EXTRACT(EPOCH FROM (now() - m.sending_at)) AS sending_for_s,
       EXTRACT(EPOCH FROM COALESCE(m.queued_at, m.created_at))::float8 AS queued_epoch,
       EXTRACT(EPOCH FROM (now() - COALESCE(m.queued_at, m.created_at)))::float8 AS age_s,
       c.status AS connection_status, c.status_reason AS connection_reason, k.status AS campaign_status
FROM messages m
LEFT JOIN connections c ON c.id = m.connection_id
LEFT JOIN campaigns k ON k.id = m.campaign_id
WHERE m.id = %(id)s
"""

#: A clean failure (nothing reached the provider, or it refused): the next attempt may send at once.
RELEASE = """
UPDATE messages SET status = 'queued', updated_at = now() WHERE id = %(id)s AND status = 'sending'
"""

#: A deferral (throttled) is not an attempt: hand the row back as it was.
RELEASE_DEFERRED = """
UPDATE messages SET status = 'queued', attempts = GREATEST(attempts - 1, 0), updated_at = now()
WHERE id = %(id)s AND status = 'sending'
"""

CANCEL = """
UPDATE messages SET status = 'cancelled', updated_at = now() WHERE id = %(id)s AND status = 'queued'
"""

#: The connection's credentials must be fixed by a human (``%(id)s``, ``%(reason)s``), with its event.
CONNECTION_NEEDS_ATTENTION = events.change_connection_status(
    where="id = %(id)s", status="'needs_attention'", reason="%(reason)s::text"
)

#: The provider reported the connection's session closed (a Baileys bridge's "Connection Closed"): its sends
#: are held until it is active again (a ``connection.update`` ``open``, a PATCH). With its event.
CONNECTION_CLOSED = events.change_connection_status(
    where="id = %(id)s AND status = 'active'", status="'inactive'", reason="%(reason)s::text"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message taken for sending, with its connection's credentials."""

    row: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.row[key]


async def claim_many(pool: AsyncConnectionPool, message_ids: list[int], reconcile_s: int) -> list[Claimed | None]:
    """Move the messages to ``sending`` in one statement; per id its claim, or ``None`` when it is not sendable
    now (see :func:`inspect`). An id asked for twice is claimed for its first caller only."""
    async with pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        params = {"ids": list(set(message_ids)), "reconcile_s": reconcile_s, "window_s": WINDOW_SECONDS}
        await cursor.execute(CLAIM, params, prepare=True)
        claimed = {row["id"]: Claimed(row) for row in await cursor.fetchall()}
    return [claimed.pop(message_id, None) for message_id in message_ids]


async def inspect(pool: AsyncConnectionPool, message_id: int) -> dict[str, Any] | None:
    """The state that decided a failed claim."""
    async with pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(INSPECT, {"id": message_id}, prepare=True)
        return await cursor.fetchone()


async def execute(pool: AsyncConnectionPool, sql: str, params: dict[str, Any]) -> int:
    """Run one statement; returns the affected row count."""
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, params, prepare=True)
        return cursor.rowcount
