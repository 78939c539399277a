"""Make a failed outbound message sendable again (``POST /api/messages/{id}/retry``, a dead-letter replay).

A message the sender failed for good is ``failed``, and the sender leaves ``failed`` rows alone (a redelivered
job must never send twice). Reopening it, under the row's lock, moves its failure (error, time, attempts) to
the end of its ``history`` and puts it back to ``queued`` with fresh attempts; its campaign's
``failed_count`` is given back (it is counted in ``sent_count`` once it is sent), so the counters stay exact.

Refused, with the reason, when the message:

* is not ``failed`` (nothing to retry; a replay of a job whose row is not failed runs it as it is);
* was accepted by the provider and then reported failed by a status webhook (it has a provider id: a
  late status for that id would land on the new send — create a new message instead);
* belongs to a cancelled campaign, or its connection needs attention (fix the connection first: the send
  would only fail again).

The SQL is written once and run from the API (psycopg, async) and from the ledger's replay (SQLAlchemy).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

#: The message and what decides whether it may be retried, its row locked.
LOCK = """
SELECT m.id, m.status, m.external_id, m.direction, m.campaign_id, m.connection_id,
       c.status AS connection_status, c.status_reason AS connection_reason, k.status AS campaign_status
FROM messages m
LEFT JOIN connections c ON c.id = m.connection_id
LEFT JOIN campaigns k ON k.id = m.campaign_id
WHERE m.id = %(id)s
FOR UPDATE OF m
"""

#: ``failed`` → ``queued`` with fresh attempts, the failure appended to ``history``, the campaign's
#: ``failed_count`` given back. Run after :data:`LOCK` in the same transaction.
REOPEN = """
WITH reopened AS (
  UPDATE messages m SET
    status = 'queued', attempts = 0, error_code = NULL, error_title = NULL, failed_at = NULL, sending_at = NULL,
    queued_at = now(), updated_at = now(),
    history = m.history || jsonb_build_array(jsonb_build_object(
      'status', 'failed', 'error_code', m.error_code, 'error_title', m.error_title, 'failed_at', m.failed_at,
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
    failed_at = (m.history -> -1 ->> 'failed_at')::timestamptz, history = m.history - (-1), updated_at = now()
  WHERE m.id = %(id)s AND m.status = 'queued' AND m.attempts = 0 AND jsonb_array_length(m.history) > 0
  RETURNING m.campaign_id
)
UPDATE campaigns k SET failed_count = k.failed_count + 1 FROM undone u WHERE k.id = u.campaign_id
"""

#: How a retry was asked for (kept in the history entry).
VIA_API = "api"
VIA_REPLAY = "replay"


class NotRetryable(Exception):
    """The message cannot be retried now; the text says why (answered as 409 by the API)."""


def refusal(state: dict[str, Any] | None, message_id: int) -> str | None:
    """Why the locked message ``state`` (a :data:`LOCK` row) may not be reopened, or ``None``."""
    if state is None or state["direction"] != "out":
        return f"message {message_id} is not an outbound message"
    if state["status"] != "failed":
        return f"message {message_id} is {state['status']}; only a failed message can be retried"
    if state["external_id"] is not None:
        return (
            f"message {message_id} was accepted by the provider (as {state['external_id']}) and then reported "
            "failed; send a new message instead"
        )
    if state["campaign_status"] == "cancelled":
        return f"campaign {state['campaign_id']} of message {message_id} is cancelled"
    if state["connection_status"] == "needs_attention":
        reason = f" ({state['connection_reason']})" if state["connection_reason"] else ""
        return (
            f"connection {state['connection_id']} needs attention{reason}: fix its credentials first "
            f"(PATCH /api/connections/{state['connection_id']})"
        )
    return None


async def reopen_async(conn: AsyncConnection[Any], message_id: int, *, via: str = VIA_API) -> None:
    """Reopen failed message ``message_id`` in one transaction on ``conn``; :class:`NotRetryable` if it may not be.

    A missing message raises ``LookupError``.
    """
    async with conn.transaction():
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(LOCK, {"id": message_id})
        state = await cursor.fetchone()
        if state is None:
            raise LookupError(f"no message {message_id}")
        reason = refusal(state, message_id)
        if reason is not None:
            raise NotRetryable(reason)
        await cursor.execute(REOPEN, {"id": message_id, "via": via})


def reopen_for_replay(session: Session, message_id: int) -> str | None:
    """In the replay's transaction: reopen the message if it is failed; the reason when it must not be replayed.

    A message that is not failed (queued, in flight, sent) is left as it is and its job may run again: the
    sender sends what is still to send, once. Only a failed message that cannot be reopened refuses the replay.
    """
    conn = session.connection()
    row = conn.exec_driver_sql(LOCK, {"id": message_id}).mappings().one_or_none()
    if row is None or row["status"] != "failed":
        return None
    reason = refusal(dict(row), message_id)
    if reason is not None:
        return reason
    conn.exec_driver_sql(REOPEN, {"id": message_id, "via": VIA_REPLAY})
    return None
