"""Apply delivery statuses to outbound messages: forward only, campaign counters kept exact.

Ordering: queued < sending < sent < delivered < read < played; ``failed`` is terminal and may follow
queued / sending / sent only. A status may skip steps (Meta can skip ``delivered``): the timestamps and the
campaign counters of every implied step are filled in; ``failed`` implies ``sent`` only (the provider had
accepted the message). Applying the same status twice changes nothing.

The SQL is written once (psycopg ``%(name)s`` parameters) and run from the sync ingest worker
(``exec_driver_sql``) and from the async sender (psycopg pool).

A status whose message is not known yet is kept in ``pending_statuses`` and applied when the message
appears: the sender applies pending rows after recording the provider id, and the ingest worker checks
again after inserting a pending row, so whichever commits second sees the other.

A status belongs to the connection (number, bridge instance) it arrived on: it is looked up by
``(connection_id, external_id)`` and kept pending for that connection only. When one zapq company messages
another, both hold a row with the same provider id (the sender's outbound, the receiver's inbound copy); a
status reported on one number never touches the other's row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from libs.events import outbox_store as events
from libs.rules.reasons import rule_reason

RANKS: dict[str, int] = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4, "played": 5}
FAILED = "failed"


def _rank(column: str) -> str:
    cases = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in RANKS.items())
    return f"(CASE {column} {cases} ELSE -1 END)"


#: The context a status event keeps (its deliveries' parent): the ``message.status`` span ``%(span_id)s`` that
#: applies it (:func:`libs.tracing.late_span`) — in the trace of the send that got the message its provider id
#: (the row's ``traceparent``), else in ``%(trace_id)s`` (the webhook being applied); NULL when neither is traced.
#: No span (``%(span_id)s`` NULL: the sender applying a status kept pending): the send's own context.
STATUS_TRACEPARENT = """CASE WHEN %(span_id)s::text IS NULL THEN r.traceparent
       ELSE '00-' || COALESCE(substr(r.traceparent, 4, 32), %(trace_id)s::text) || '-' || %(span_id)s::text || '-01'
       END"""
#: ``message.status`` of the rows an apply statement moved (its ``updated`` CTE), with Meta's extras.
STATUS_EVENTS = events.message_status(
    "updated",
    status="%(status)s::text",
    at="%(at)s::timestamptz",
    error="CASE WHEN %(status)s = 'failed' THEN jsonb_build_object('code', %(code)s::int, 'title', %(title)s::text,"
    " 'reason', %(reason)s::text) END",
    pricing="%(pricing)s::jsonb",
    conversation="%(conversation)s::jsonb",
    traceparent=STATUS_TRACEPARENT,
)
#: ``message.status`` ``sent`` of the rows the sender recorded, in the trace of the send (the row's context).
SENT_EVENTS = events.message_status("updated", status="'sent'", at="now()", traceparent="r.traceparent")


def _apply_sql(key: str) -> str:
    """The status-apply statement for the rows ``key`` selects.

    Meta stamps its statuses to the second while ``sent_at`` is ours (microseconds, taken when Meta accepted
    the send), so a ``delivered`` stamped 12:00:01 may name an earlier instant than a ``sent_at`` of
    12:00:01.3. The stored times are clamped — ``sent_at`` ≤ ``delivered_at`` ≤ ``read_at`` always holds — and
    Meta's own stamp stays in the ``message.status`` event (``at``).
    """
    old = _rank("t.old_status")
    return f"""
WITH target AS (
  SELECT id, status AS old_status, traceparent FROM messages
  WHERE {key} AND direction = 'out'
  FOR UPDATE
), updated AS (
  UPDATE messages m SET
    status = %(status)s,
    external_id = COALESCE(m.external_id, %(external_id)s),
    sent_at = CASE WHEN %(rank)s >= 2 THEN COALESCE(m.sent_at, %(at)s) ELSE m.sent_at END,
    delivered_at = CASE WHEN %(rank)s >= 3 THEN COALESCE(m.delivered_at, GREATEST(%(at)s::timestamptz, m.sent_at))
                   ELSE m.delivered_at END,
    read_at = CASE WHEN %(rank)s >= 4
              THEN COALESCE(m.read_at, GREATEST(%(at)s::timestamptz, m.sent_at, m.delivered_at)) ELSE m.read_at END,
    failed_at = CASE WHEN %(status)s = 'failed' THEN %(at)s ELSE m.failed_at END,
    error_code = CASE WHEN %(status)s = 'failed' THEN %(code)s ELSE m.error_code END,
    error_title = CASE WHEN %(status)s = 'failed' THEN %(title)s ELSE m.error_title END,
    failure_reason = CASE WHEN %(status)s = 'failed' THEN %(reason)s::text ELSE m.failure_reason END,
    updated_at = now()
  FROM target t
  WHERE m.id = t.id AND (
    (%(status)s <> 'failed' AND {old} >= 0 AND {old} < %(rank)s)
    OR (%(status)s = 'failed' AND t.old_status IN ('queued', 'sending', 'sent')))
  RETURNING m.id, m.campaign_id, m.company_id, m.connection_id, m.external_id, m.recipient, t.old_status,
            m.traceparent
), events_written AS (
{STATUS_EVENTS}
), counted AS (
  UPDATE campaigns k SET
    sent_count = k.sent_count + (CASE WHEN %(rank)s >= 2 AND {_rank("u.old_status")} < 2 THEN 1 ELSE 0 END),
    delivered_count = k.delivered_count
      + (CASE WHEN %(rank)s >= 3 AND {_rank("u.old_status")} < 3 THEN 1 ELSE 0 END),
    read_count = k.read_count + (CASE WHEN %(rank)s >= 4 AND {_rank("u.old_status")} < 4 THEN 1 ELSE 0 END),
    failed_count = k.failed_count + (CASE WHEN %(status)s = 'failed' THEN 1 ELSE 0 END)
  FROM updated u WHERE k.id = u.campaign_id
  RETURNING k.id
)
SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM updated) AS applied,
       (SELECT count(*) FROM counted) AS counted, (SELECT traceparent FROM target LIMIT 1) AS send_trace
"""


APPLY_BY_EXTERNAL_ID = _apply_sql("connection_id = %(connection_id)s AND external_id = %(external_id)s")
#: Reconciliation through our own id (Meta's ``biz_opaque_callback_data``, scoped to the reporting connection)
#: or the sender's own record (``connection_id`` NULL: the sender names its own row).
APPLY_BY_ID = _apply_sql(
    "id = %(id)s AND (external_id IS NULL OR external_id = %(external_id)s)"
    " AND (%(connection_id)s::bigint IS NULL OR connection_id = %(connection_id)s)"
)

#: Serialises "keep as pending" (ingest) against "record the provider id" (sender) for one external id,
#: so a pending status is never left behind by the two racing.
LOCK_EXTERNAL_ID = "SELECT pg_advisory_xact_lock(hashtext(%(external_id)s))"

INSERT_PENDING = """
INSERT INTO pending_statuses (connection_id, external_id, client_ref, status, occurred_at, error_code, error_title)
VALUES (%(connection_id)s, %(external_id)s, %(client_ref)s, %(status)s, %(at)s, %(code)s, %(title)s)
ON CONFLICT (connection_id, external_id, status) DO NOTHING
"""

#: The statuses kept for one connection's provider id (rows kept before statuses were scoped match any).
TAKE_PENDING = """
DELETE FROM pending_statuses
WHERE external_id = %(external_id)s AND (connection_id = %(connection_id)s OR connection_id IS NULL)
RETURNING external_id, client_ref, status, occurred_at AS at, error_code AS code, error_title AS title,
          %(connection_id)s::bigint AS connection_id
"""


#: The sender's record of many accepted sends at once (``queued``/``sending`` → ``sent``, campaigns counted), each
#: with its send's trace context (``%(traceparents)s``, NULL: not traced), kept in the row for its statuses.
#: Same rules as ``APPLY_BY_ID`` with status ``sent``; run after ``LOCK_EXTERNAL_IDS`` in one transaction.
RECORD_SENT_MANY = f"""
WITH v AS (
  SELECT * FROM unnest(%(ids)b::bigint[], %(external_ids)b::text[], %(traceparents)b::text[])
    AS v(id, external_id, traceparent)
), target AS (
  SELECT m.id, m.status AS old_status, v.external_id, v.traceparent FROM messages m JOIN v ON v.id = m.id
  WHERE m.direction = 'out' AND (m.external_id IS NULL OR m.external_id = v.external_id)
  FOR UPDATE OF m
), updated AS (
  UPDATE messages m SET
    status = 'sent', external_id = COALESCE(m.external_id, t.external_id), sent_at = COALESCE(m.sent_at, now()),
    updated_at = now(), traceparent = COALESCE(t.traceparent, m.traceparent)
  FROM target t
  WHERE m.id = t.id AND t.old_status IN ('queued', 'sending')
  RETURNING m.id, m.campaign_id, m.company_id, m.connection_id, m.external_id, m.recipient, t.old_status,
            m.traceparent
), events_written AS (
{SENT_EVENTS}
), counted AS (
  UPDATE campaigns k SET sent_count = k.sent_count + c.n
  FROM (SELECT campaign_id, count(*) AS n FROM updated WHERE campaign_id IS NOT NULL GROUP BY campaign_id) c
  WHERE k.id = c.campaign_id
  RETURNING k.id
)
SELECT (SELECT count(*) FROM updated) AS applied, (SELECT count(*) FROM counted) AS counted
"""

#: ``LOCK_EXTERNAL_ID`` for many ids, taken in the order given (callers sort, so two batches never deadlock).
LOCK_EXTERNAL_IDS = """
SELECT count(pg_advisory_xact_lock(hashtext(x)))
FROM unnest(%(external_ids)b::text[]) WITH ORDINALITY AS u(x, n)
"""

#: ``TAKE_PENDING`` for the messages just recorded (``%(ids)s`` with their ``%(external_ids)s``), each under its
#: message's own connection.
TAKE_PENDING_MANY = """
DELETE FROM pending_statuses p
USING unnest(%(ids)b::bigint[], %(external_ids)b::text[]) AS v(id, external_id), messages m
WHERE m.id = v.id AND p.external_id = v.external_id
  AND (p.connection_id = m.connection_id OR p.connection_id IS NULL)
RETURNING p.external_id, p.client_ref, p.status, p.occurred_at AS at, p.error_code AS code, p.error_title AS title,
          m.connection_id
"""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One status report for one outbound message."""

    external_id: str
    status: str
    at: dt.datetime | None = None
    client_ref: str | None = None
    code: int | None = None
    title: str | None = None
    #: Meta's ``pricing`` / ``conversation`` objects, passed on in the ``message.status`` event.
    pricing: dict[str, Any] | None = None
    conversation: dict[str, Any] | None = None
    #: The connection whose number reported it: only that connection's messages are looked at.
    connection_id: int | None = None
    #: The WhatsApp rule a ``failed`` one broke (default: from Meta's code, :func:`libs.rules.reasons.rule_reason`).
    reason: str | None = None
    #: The ``message.status`` span applying it (:func:`libs.tracing.late_span`): its id, and the trace it is in when
    #: the message's send was not traced (the webhook's); the status event keeps that span's context.
    span_id: str | None = None
    trace_id: str | None = None

    def params(self, message_id: int | None = None) -> dict[str, Any]:
        """Parameters of the apply statements."""
        return {
            "external_id": self.external_id,
            "status": self.status,
            # ``failed`` implies only ``sent`` (the provider accepted the message), never delivered/read.
            "rank": RANKS.get(self.status, RANKS["sent"] if self.status == FAILED else -2),
            "at": self.at or dt.datetime.now(dt.UTC),
            "code": self.code,
            "title": self.title,
            "reason": self.reason or rule_reason(self.code),
            "client_ref": self.client_ref,
            "id": message_id,
            "pricing": Jsonb(self.pricing) if self.pricing is not None else None,
            "conversation": Jsonb(self.conversation) if self.conversation is not None else None,
            "connection_id": self.connection_id,
            "span_id": self.span_id,
            "trace_id": self.trace_id,
        }


def _client_id(client_ref: str | None) -> int | None:
    return int(client_ref) if client_ref and client_ref.isdigit() and len(client_ref) < 19 else None


def _sorted(changes: list[dict[str, Any]]) -> list[StatusChange]:
    items = [StatusChange(**row) for row in changes]
    return sorted(items, key=lambda c: RANKS.get(c.status, 10))


def apply_status(session: Session, change: StatusChange) -> str:
    """Apply ``change`` (reported on ``change.connection_id``) in the session's transaction; returns
    ``applied``, ``unchanged`` or ``pending``."""
    return apply_status_traced(session, change)[0]


def apply_status_traced(session: Session, change: StatusChange) -> tuple[str, str | None]:
    """:func:`apply_status`, and the trace context of the message's send, read by the same statement (None: no
    message found, or its send not traced)."""
    if change.connection_id is None:
        raise ValueError("a status is applied for the connection that reported it: connection_id is required")
    conn = session.connection()
    if change.status not in RANKS and change.status != FAILED:
        return "unchanged", None
    found, applied, _, trace = conn.exec_driver_sql(APPLY_BY_EXTERNAL_ID, change.params()).one()
    if not found and (message_id := _client_id(change.client_ref)) is not None:
        found, applied, _, trace = conn.exec_driver_sql(APPLY_BY_ID, change.params(message_id)).one()
    if found:
        return ("applied" if applied else "unchanged"), trace
    conn.exec_driver_sql(LOCK_EXTERNAL_ID, {"external_id": change.external_id})
    found, applied, _, trace = conn.exec_driver_sql(APPLY_BY_EXTERNAL_ID, change.params()).one()
    if found:
        return ("applied" if applied else "unchanged"), trace
    conn.exec_driver_sql(INSERT_PENDING, change.params())
    return "pending", None


def apply_pending(session: Session, connection_id: int, external_id: str) -> int:
    """Apply (and drop) statuses kept for ``external_id`` of ``connection_id``; returns how many changed the
    message."""
    conn = session.connection()
    params = {"external_id": external_id, "connection_id": connection_id}
    rows = [dict(r._mapping) for r in conn.exec_driver_sql(TAKE_PENDING, params)]
    applied = 0
    for change in _sorted(rows):
        applied += conn.exec_driver_sql(APPLY_BY_EXTERNAL_ID, change.params()).one()[1]
    return applied


async def record_sent_async(
    pool: AsyncConnectionPool, message_id: int, external_id: str, traceparent: str | None = None
) -> None:
    """:func:`record_sent_many_async` for one send."""
    await record_sent_many_async(pool, [(message_id, external_id, traceparent)])


async def record_sent_many_async(pool: AsyncConnectionPool, sent: list[tuple[int, str, str | None]]) -> None:
    """The sender's record of accepted sends, ``(message id, provider id, send's traceparent)``, in one
    transaction: ``sending`` → ``sent`` with campaigns counted, then any statuses that came early."""
    ordered = sorted(sent, key=lambda one: one[1])
    external_ids = [external_id for _, external_id, _ in ordered]
    params = {
        "ids": [message_id for message_id, _, _ in ordered],
        "external_ids": external_ids,
        "traceparents": [traceparent for _, _, traceparent in ordered],
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(LOCK_EXTERNAL_IDS, {"external_ids": sorted(set(external_ids))}, prepare=True)
        await conn.execute(RECORD_SENT_MANY, params, prepare=True)
        cursor = await conn.execute(TAKE_PENDING_MANY, params, prepare=True)
        columns = [c.name for c in cursor.description or []]
        rows = [dict(zip(columns, row, strict=True)) for row in await cursor.fetchall()]
        for change in _sorted(rows):
            await conn.execute(APPLY_BY_EXTERNAL_ID, change.params(), prepare=True)


async def record_failed_async(
    pool: AsyncConnectionPool, message_id: int, *, code: int | None, title: str, reason: str | None = None
) -> None:
    """The sender's record of a send that failed for good (``queued``/``sending`` → ``failed``), campaign counted.

    The provider never accepted the message, so unlike a ``failed`` webhook this implies no ``sent`` step (no
    ``sent_at``, no ``sent_count``). A row that got its provider id meanwhile is left alone.
    """
    params = StatusChange("", FAILED, code=code, title=title, reason=reason).params(message_id)
    params.update(external_id=None, rank=RANKS["sending"])
    async with pool.connection() as conn:
        await conn.execute(APPLY_BY_ID, params, prepare=True)
