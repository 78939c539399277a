"""SQL of message rows (psycopg ``%(name)s`` parameters): async for the API, sync for the workers.

The messages store has three parts: this module (rows created by the API, the ingest worker and campaign
expansion; reads; retry; the outbox sweep), :mod:`libs.sending.store` (the sender's claims and releases, its
hot path) and :mod:`libs.messages.status_store` (delivery statuses, shared by the ingest worker and the
sender). Statements that announce their change write its event in the same statement
(:mod:`libs.events.outbox_store`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from sqlalchemy.orm import Session

from libs.contacts import store as contacts
from libs.events import outbox_store as events
from libs.events.types import MESSAGE_RECEIVED

COLUMNS = """id, company_id, connection_id, campaign_id, direction, priority, status, recipient, type, body,
payload, idempotency_key, external_id, error_code, error_title, failure_reason, attempts, history, created_at,
queued_at, sending_at, sent_at, delivered_at, read_at, failed_at"""

# -- created by the API ---------------------------------------------------------------------------------

#: A producer's message and its ``message.created`` event; nothing when its idempotency key was used before.
INSERT = f"""
WITH created AS (
  INSERT INTO messages (company_id, connection_id, direction, priority, status, recipient, type, body, payload,
                        idempotency_key, queued_at)
  VALUES (%(company_id)s, %(connection_id)s, 'out', %(priority)s, 'queued', %(recipient)s, %(type)s, %(body)s,
          %(payload)s, %(key)s, now())
  ON CONFLICT (company_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING {COLUMNS}
), events_written AS (
{events.message_created("created")}
)
SELECT * FROM created
"""

GET = f"SELECT {COLUMNS} FROM messages WHERE id = %(id)s"
BY_IDEMPOTENCY_KEY = f"SELECT {COLUMNS} FROM messages WHERE company_id = %(company_id)s AND idempotency_key = %(key)s"
#: Whether a connection's message with a provider id is ours (``out``) or the customer's (``in``).
DIRECTION_BY_EXTERNAL_ID = (
    "SELECT direction FROM messages WHERE connection_id = %(connection_id)s AND external_id = %(external_id)s"
)

# -- created by the ingest worker -----------------------------------------------------------------------

#: Every message the ingest worker read in one transaction, in one statement: the contacts upserted, the rows
#: inserted once per external id (the first of duplicates within the batch; one already stored is skipped),
#: each new inbound one's ``message.received`` event written, in the batch's order (``ord``). Returns the
#: ``ord`` and the new id of each row stored.
INSERT_RECEIVED_MANY = f"""
WITH input AS (
  SELECT * FROM unnest(%(ords)b::int[], %(company_ids)b::bigint[], %(connection_ids)b::bigint[],
                       %(names)b::text[], %(directions)b::text[], %(statuses)b::text[], %(recipients)b::text[],
                       %(types)b::text[], %(bodies)b::text[], %(payloads)b::jsonb[], %(external_ids)b::text[],
                       %(created_ats)b::timestamptz[], %(sent_ats)b::timestamptz[], %(events)b::jsonb[],
                       %(traceparents)b::text[])
    AS i(ord, company_id, connection_id, name, direction, status, wa_id, type, body, payload, external_id,
         created_at, sent_at, event, traceparent)
), contacts_written AS (
  {contacts.upsert_rows("input")}
), firsts AS (
  SELECT DISTINCT ON (connection_id, external_id) * FROM input ORDER BY connection_id, external_id, ord
), stored AS (
  INSERT INTO messages (company_id, connection_id, contact_id, direction, status, recipient, type, body, payload,
                        external_id, created_at, sent_at)
  SELECT f.company_id, f.connection_id, c.id, f.direction, f.status, f.wa_id, f.type, f.body, f.payload,
         f.external_id, f.created_at, f.sent_at
  FROM firsts f JOIN contacts_written c ON c.company_id = f.company_id AND c.wa_id = f.wa_id
  ORDER BY f.ord
  ON CONFLICT (connection_id, external_id) DO NOTHING
  RETURNING id, company_id, connection_id, recipient, created_at, external_id
), events_written AS (
  {events.INSERT_EVENTS_TRACED}
  SELECT s.company_id, '{MESSAGE_RECEIVED}', {events.conversation_of_contact("s.recipient")}, s.created_at,
         f.event || jsonb_build_object('message_id', s.id), f.traceparent
  FROM stored s JOIN firsts f ON f.connection_id = s.connection_id AND f.external_id = s.external_id
  WHERE f.event IS NOT NULL
  ORDER BY s.id
)
SELECT f.ord, s.id FROM stored s JOIN firsts f ON f.connection_id = s.connection_id AND f.external_id = s.external_id
"""

#: The columns of one row of :data:`INSERT_RECEIVED_MANY`, in its parameters' names.
RECEIVED_COLUMNS = {
    "company_id": "company_ids",
    "connection_id": "connection_ids",
    "name": "names",
    "direction": "directions",
    "status": "statuses",
    "recipient": "recipients",
    "type": "types",
    "body": "bodies",
    "payload": "payloads",
    "external_id": "external_ids",
    "created_at": "created_ats",
    "sent_at": "sent_ats",
    "event": "events",
    "traceparent": "traceparents",
}

# -- created by campaign expansion ----------------------------------------------------------------------

#: One statement for a whole slice (with each new message's ``message.created`` event): arrays in, rows out,
#: nothing compiled per row.
INSERT_CAMPAIGN_SLICE = f"""
WITH created AS (
  INSERT INTO messages (company_id, connection_id, campaign_id, direction, priority, status, recipient, type,
                        body, payload, queued_at, failure_reason)
  SELECT %(company_id)s, %(connection_id)s, %(campaign_id)s, 'out', 'low',
         CASE WHEN o.phone IS NULL THEN 'queued' ELSE 'cancelled' END, r.recipient, %(type)s,
         r.body, r.payload, now(), CASE WHEN o.phone IS NOT NULL THEN 'opted_out' END
  FROM unnest(%(recipients)b::text[], %(bodies)b::text[], %(payloads)b::jsonb[]) AS r(recipient, body, payload)
  LEFT JOIN opt_outs o ON o.company_id = %(company_id)s AND o.phone = r.recipient
  ON CONFLICT (campaign_id, recipient) WHERE campaign_id IS NOT NULL DO NOTHING
  RETURNING id, company_id, connection_id, campaign_id, recipient, type, body, payload, priority, created_at, status
), queued AS (
  SELECT * FROM created WHERE status = 'queued'
), events_written AS (
{events.message_created("queued")}
)
SELECT id, status = 'queued' AS queued FROM created
"""

QUEUED_IN_SLICE = """
SELECT id FROM messages
WHERE campaign_id = %(campaign_id)s AND status = 'queued' AND recipient = ANY(%(recipients)b::text[])
"""

#: A cancelled campaign's sends that are still queued are cancelled with it.
CANCEL_QUEUED_OF_CAMPAIGN = (
    "UPDATE messages SET status = 'cancelled', updated_at = now() WHERE campaign_id = %(campaign_id)s "
    "AND status = 'queued'"
)

# -- retry ----------------------------------------------------------------------------------------------

#: The message and what decides whether it may be retried, its row locked.
LOCK_FOR_RETRY = """
SELECT m.id, m.status, m.external_id, m.direction, m.campaign_id, m.connection_id,
       c.status AS connection_status, c.status_reason AS connection_reason, k.status AS campaign_status
FROM messages m
LEFT JOIN connections c ON c.id = m.connection_id
LEFT JOIN campaigns k ON k.id = m.campaign_id
WHERE m.id = %(id)s
FOR UPDATE OF m
"""

#: ``failed`` → ``queued`` with fresh attempts, the failure appended to ``history``, the campaign's
#: ``failed_count`` given back. Run after :data:`LOCK_FOR_RETRY` in the same transaction.
REOPEN = """
WITH reopened AS (
  UPDATE messages m SET
    status = 'queued', attempts = 0, error_code = NULL, error_title = NULL, failure_reason = NULL, failed_at = NULL,
    sending_at = NULL, queued_at = now(), updated_at = now(),
    history = m.history || jsonb_build_array(jsonb_build_object(
      'status', 'failed', 'error_code', m.error_code, 'error_title', m.error_title,
      'failure_reason', m.failure_reason, 'failed_at', m.failed_at,
      'attempts', m.attempts, 'retried_at', now(), 'via', %(via)s::text))
  WHERE m.id = %(id)s AND m.status = 'failed' AND m.external_id IS NULL
  RETURNING m.id, m.campaign_id
), counted AS (
  UPDATE campaigns k SET failed_count = GREATEST(k.failed_count - 1, 0)
  FROM reopened r WHERE k.id = r.campaign_id
  RETURNING k.id
)
SELECT (SELECT count(*) FROM reopened) AS reopened, (SELECT count(*) FROM counted) AS counted
"""

#: Undo :data:`REOPEN` when the retried message's job could not be enqueued: failed again, as it was.
UNDO_REOPEN = """
WITH undone AS (
  UPDATE messages m SET
    status = 'failed', attempts = (m.history -> -1 ->> 'attempts')::int,
    error_code = (m.history -> -1 ->> 'error_code')::int, error_title = m.history -> -1 ->> 'error_title',
    failure_reason = m.history -> -1 ->> 'failure_reason',
    failed_at = (m.history -> -1 ->> 'failed_at')::timestamptz, history = m.history - (-1), updated_at = now()
  WHERE m.id = %(id)s AND m.status = 'queued' AND m.attempts = 0 AND jsonb_array_length(m.history) > 0
  RETURNING m.campaign_id
)
UPDATE campaigns k SET failed_count = k.failed_count + 1 FROM undone u WHERE k.id = u.campaign_id
"""

# -- the outbox sweep of sends --------------------------------------------------------------------------

#: Outbound rows that should have a send job (see :mod:`libs.sending.sweep`), each index-backed scan on its own.
SWEEP_CANDIDATES = """
SELECT m.id, m.campaign_id, m.updated_at
FROM messages m JOIN connections c ON c.id = m.connection_id
WHERE m.campaign_id IS NULL AND m.status IN ('queued', 'sending') AND m.direction = 'out'
  AND m.external_id IS NULL AND m.updated_at < %(before)s AND c.status = 'active'
UNION ALL
SELECT m.id, m.campaign_id, m.updated_at
FROM campaigns k JOIN messages m ON m.campaign_id = k.id JOIN connections c ON c.id = m.connection_id
WHERE k.status = 'running' AND m.status IN ('queued', 'sending') AND m.direction = 'out'
  AND m.external_id IS NULL AND m.updated_at < %(before)s AND c.status = 'active'
"""

#: Touch the rows still as seen (``%(ids)s`` with their ``%(stamps)s``): a row claimed meanwhile is skipped.
SWEEP_TOUCH = """
UPDATE messages m SET updated_at = now()
FROM unnest(%(ids)b::bigint[], %(stamps)b::timestamptz[]) AS v(id, stamp)
WHERE m.id = v.id AND m.updated_at = v.stamp AND m.status IN ('queued', 'sending') AND m.external_id IS NULL
RETURNING m.id, m.company_id, m.campaign_id, m.priority, m.created_at
"""


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages a page holds (each set field is one condition)."""

    company_id: int | None = None
    campaign_id: int | None = None
    #: The other party's phone number (digits).
    contact: str | None = None
    direction: str | None = None
    status: str | None = None
    #: The provider's id (a wamid, a Baileys key id).
    external_id: str | None = None

    def where(self) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions and their parameters."""
        conditions: list[str] = []
        values: dict[str, Any] = {}
        if self.company_id is not None:
            conditions.append("company_id = %(company)s")
            values["company"] = self.company_id
        if self.campaign_id is not None:
            conditions.append("campaign_id = %(campaign)s")
            values["campaign"] = self.campaign_id
        if self.contact is not None:
            conditions.append("recipient = %(contact)s")
            values["contact"] = self.contact
        if self.direction is not None:
            conditions.append("direction = %(direction)s")
            values["direction"] = self.direction
        if self.status is not None:
            conditions.append("status = %(status)s")
            values["status"] = self.status
        if self.external_id is not None:
            conditions.append("external_id = %(external_id)s")
            values["external_id"] = self.external_id
        return conditions, values


# -- async (the API) ------------------------------------------------------------------------------------


#: Messages failed by a WhatsApp rule (:mod:`libs.rules.reasons`) in the last ``%(window_s)s`` seconds, per reason
#: (on the partial index ``ix_messages_rule_failures``).
RULE_FAILURES = """
SELECT failure_reason, count(*) FROM messages
WHERE failure_reason IS NOT NULL AND failed_at > now() - make_interval(secs => %(window_s)s)
GROUP BY failure_reason ORDER BY failure_reason
"""
#: The window of :data:`RULE_FAILURES` in ``zapq stats`` and ``/metrics``.
RULE_FAILURES_WINDOW_S = 86_400


async def rule_failures(conn: AsyncConnection[Any], window_s: int = RULE_FAILURES_WINDOW_S) -> dict[str, int]:
    """Messages failed by each WhatsApp rule in the last ``window_s`` seconds."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(RULE_FAILURES, {"window_s": window_s})
    return {reason: int(n) for reason, n in await cursor.fetchall()}


def rule_failures_sync(session: Session, window_s: int = RULE_FAILURES_WINDOW_S) -> dict[str, int]:
    """:func:`rule_failures` in a sync session (the CLI)."""
    rows = session.connection().exec_driver_sql(RULE_FAILURES, {"window_s": window_s}).all()
    return {reason: int(n) for reason, n in rows}


async def insert(conn: AsyncConnection[Any], values: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a producer's message (:data:`INSERT`); ``None`` when its idempotency key exists."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(INSERT, values)
    return await cursor.fetchone()


async def get(conn: AsyncConnection[Any], message_id: int) -> dict[str, Any] | None:
    """One message, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET, {"id": message_id})
    return await cursor.fetchone()


async def by_idempotency_key(conn: AsyncConnection[Any], company_id: int, key: str) -> dict[str, Any] | None:
    """The company's message created with ``key``, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(BY_IDEMPOTENCY_KEY, {"company_id": company_id, "key": key})
    return await cursor.fetchone()


async def direction_by_external_id(conn: AsyncConnection[Any], connection_id: int, external_id: str) -> str | None:
    """``in`` or ``out`` for the connection's message ``external_id``, or ``None`` when zapq does not have it."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(DIRECTION_BY_EXTERNAL_ID, {"connection_id": connection_id, "external_id": external_id})
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def page(
    conn: AsyncConnection[Any], flt: Filter, *, after: int | None, before: int | None, limit: int
) -> tuple[list[dict[str, Any]], str]:
    """Up to ``limit + 1`` messages by id and their order: ascending from ``after`` (up to ``before`` when both
    are given), else descending from ``before`` (or the newest)."""
    where, params = flt.where()
    if after is not None:
        where.append("id > %(after)s")
    if before is not None:
        where.append("id < %(before)s")
    order = "ASC" if after is not None else "DESC"
    sql = f"SELECT {COLUMNS} FROM messages WHERE {' AND '.join(where) or 'true'} ORDER BY id {order} LIMIT %(limit)s"
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(sql, {**params, "after": after, "before": before, "limit": limit + 1})
    return await cursor.fetchall(), order


async def lock_for_retry(conn: AsyncConnection[Any], message_id: int) -> dict[str, Any] | None:
    """The message's retry state (:data:`LOCK_FOR_RETRY`), its row locked until the transaction ends."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(LOCK_FOR_RETRY, {"id": message_id})
    return await cursor.fetchone()


async def reopen(conn: AsyncConnection[Any], message_id: int, via: str) -> None:
    """:data:`REOPEN`, after :func:`lock_for_retry` in the same transaction."""
    await conn.execute(REOPEN, {"id": message_id, "via": via})


async def undo_reopen(conn: AsyncConnection[Any], message_id: int) -> None:
    """:data:`UNDO_REOPEN`: failed again, as before the retry."""
    await conn.execute(UNDO_REOPEN, {"id": message_id})


async def cancel_queued_of_campaign(conn: AsyncConnection[Any], campaign_id: int) -> None:
    """Cancel the campaign's still-queued sends (in the cancel's transaction)."""
    await conn.execute(CANCEL_QUEUED_OF_CAMPAIGN, {"campaign_id": campaign_id})


# -- sync (the workers, a dead-letter replay) -----------------------------------------------------------


def insert_received_many(session: Session, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Store the messages the ingest worker read (:data:`INSERT_RECEIVED_MANY`; each row has the keys of
    :data:`RECEIVED_COLUMNS`): position in ``rows`` → new message id, for those stored (the others were
    duplicates)."""
    params: dict[str, Any] = {"ords": list(range(len(rows)))}
    for column, name in RECEIVED_COLUMNS.items():
        params[name] = [row[column] for row in rows]
    return {ord_: message_id for ord_, message_id in session.connection().exec_driver_sql(INSERT_RECEIVED_MANY, params)}


def insert_campaign_slice(session: Session, values: dict[str, Any]) -> tuple[list[int], int]:
    """Create a campaign slice's messages (:data:`INSERT_CAMPAIGN_SLICE`): the ids of the rows created queued,
    and how many were created suppressed (``cancelled``, reason ``opted_out``: on the suppression list)."""
    rows = session.connection().exec_driver_sql(INSERT_CAMPAIGN_SLICE, values).all()
    return [row[0] for row in rows if row[1]], sum(1 for row in rows if not row[1])


def queued_in_slice(session: Session, campaign_id: int, recipients: list[str]) -> list[int]:
    """Ids of the campaign's messages to ``recipients`` still queued."""
    params = {"campaign_id": campaign_id, "recipients": recipients}
    return [row[0] for row in session.connection().exec_driver_sql(QUEUED_IN_SLICE, params)]


def get_sync(session: Session, message_id: int) -> dict[str, Any] | None:
    """:func:`get` in a sync session (``zapq job MESSAGE_ID``)."""
    row = session.connection().exec_driver_sql(GET, {"id": message_id}).mappings().one_or_none()
    return None if row is None else dict(row)


def lock_for_retry_sync(session: Session, message_id: int) -> dict[str, Any] | None:
    """:func:`lock_for_retry` in the session's transaction."""
    row = session.connection().exec_driver_sql(LOCK_FOR_RETRY, {"id": message_id}).mappings().one_or_none()
    return None if row is None else dict(row)


def reopen_sync(session: Session, message_id: int, via: str) -> None:
    """:func:`reopen` in the session's transaction."""
    session.connection().exec_driver_sql(REOPEN, {"id": message_id, "via": via})


def sweep_candidates(session: Session, before: dt.datetime) -> list[Any]:
    """``(id, campaign_id, updated_at)`` of the rows that should have a send job, unchanged since ``before``."""
    return list(session.connection().exec_driver_sql(SWEEP_CANDIDATES, {"before": before}))


def sweep_touch(session: Session, ids: list[int], stamps: list[dt.datetime]) -> list[Any]:
    """Touch the rows still as seen; ``(id, company_id, campaign_id, priority, created_at)`` of each touched."""
    return list(session.connection().exec_driver_sql(SWEEP_TOUCH, {"ids": ids, "stamps": stamps}).all())
