"""All SQL of campaigns and their recipients (psycopg ``%(name)s`` parameters): async for the API, sync for the
start (API and scheduler), the campaign runner and the sweeps.

Every status change is one conditional ``UPDATE … WHERE status IN (…)`` that also writes its ``campaign.status``
event (:mod:`libs.events.outbox_store`), so of two concurrent changes only one happens and is announced. Which change
may leave which state is :mod:`libs.campaigns.actions`' state machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from sqlalchemy.orm import Session

from libs.events import outbox_store as events

COLUMNS = """id, company_id, connection_id, name, status, content_type, body, template, content, start_at,
recipients_count, queued_count, sent_count, delivered_count, read_count, failed_count, suppressed_count, created_at,
started_at, finished_at, status_reason"""

INSERT = f"""INSERT INTO campaigns (company_id, connection_id, name, content_type, body, template, content)
VALUES (%(company_id)s, %(connection_id)s, %(name)s, %(content_type)s, %(body)s, %(template)s, %(content)s)
RETURNING {COLUMNS}"""
GET = f"SELECT {COLUMNS} FROM campaigns WHERE id = %(id)s"
LIST = (
    f"SELECT {COLUMNS} FROM campaigns WHERE (%(company_id)s::bigint IS NULL OR company_id = %(company_id)s) "
    "ORDER BY id DESC LIMIT %(limit)s"
)
STATUS = "SELECT status FROM campaigns WHERE id = %(id)s"
STATUS_FOR_UPDATE = "SELECT status FROM campaigns WHERE id = %(id)s FOR UPDATE"

INSERT_RECIPIENTS = """
INSERT INTO campaign_recipients (campaign_id, recipient, variables)
SELECT %(campaign_id)s, r, v::jsonb FROM unnest(%(recipients)b::text[], %(variables)b::text[]) AS t(r, v)
ON CONFLICT (campaign_id, recipient) DO NOTHING
"""
ADD_RECIPIENTS = (
    f"UPDATE campaigns SET recipients_count = recipients_count + %(count)s WHERE id = %(id)s RETURNING {COLUMNS}"
)


def _transition_sql(set_clause: str, announce: str, condition: str = "") -> str:
    """A conditional transition (``%(id)s``, ``%(sources)s``) with its ``campaign.status`` event."""
    return f"""
WITH moved AS (
  UPDATE campaigns SET {set_clause} WHERE id = %(id)s AND status = ANY(%(sources)s){condition} RETURNING {COLUMNS}
), events_written AS (
{events.campaign_status("moved", announce)}
)
SELECT * FROM moved"""


#: action → (the state it enters, the ``campaign.status`` it announces)
MOVES = {"pause": ("paused", "paused"), "resume": ("running", "resumed"), "cancel": ("cancelled", "cancelled")}
#: The statement of each action of :data:`MOVES`.
#: What each action does to ``status_reason``: a pause notes why (``%(reason)s``: NULL for an operator's; a rule's
#: or a quality flag's reason otherwise), a resume clears it, a cancel keeps it.
STATUS_REASON = {"pause": "%(reason)s::text", "resume": "NULL", "cancel": "status_reason"}
TRANSITION_SQL = {
    action: _transition_sql(
        f"status = '{target}', finished_at = CASE WHEN '{target}' = 'cancelled' THEN now() ELSE finished_at END, "
        f"status_reason = {STATUS_REASON[action]}",
        announce,
    )
    for action, (target, announce) in MOVES.items()
}
#: Running campaigns of some connections (``%(connections)s``), for a pause by the system (a quality flag).
RUNNING_OF_CONNECTIONS = (
    "SELECT id FROM campaigns WHERE connection_id = ANY(%(connections)s) AND status = 'running' ORDER BY id"
)
_START_SET = "status = 'running', status_reason = NULL, start_at = COALESCE(%(start_at)s, start_at), started_at = now()"
#: Run now (``%(start_at)s``: a new start time to note, or NULL).
START_NOW = _transition_sql(_START_SET, "started")
#: Run now if its start time has come (the scheduler's start).
START_DUE = _transition_sql(_START_SET, "started", " AND start_at <= now()")
SCHEDULE = _transition_sql("status = 'scheduled', start_at = %(start_at)s", "scheduled")

#: Scheduled campaigns whose time has come, the earliest first.
DUE = "SELECT id FROM campaigns WHERE status = 'scheduled' AND start_at <= now() ORDER BY start_at LIMIT 100"

#: The first and last recipient id of each slice of ``%(size)s`` recipients (one expansion job each).
SLICES = """
SELECT min(id) AS first, max(id) AS last FROM (
  SELECT id, (row_number() OVER (ORDER BY id) - 1) / %(size)s AS slice
  FROM campaign_recipients WHERE campaign_id = %(campaign)s
) s GROUP BY slice ORDER BY slice
"""

#: Running campaigns whose every message is final are completed (with their event).
FINISH = f"""
WITH finished AS (
  UPDATE campaigns c SET status = 'completed', finished_at = now()
  WHERE c.status = 'running' AND c.queued_count >= c.recipients_count
    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued', 'sending'))
  RETURNING {", ".join(f"c.{column.strip()}" for column in events.CAMPAIGN_RETURNING.split(","))}
), events_written AS (
{events.campaign_status("finished", "completed")}
)
SELECT id FROM finished
"""

PAUSED_AMONG = "SELECT id FROM campaigns WHERE id = ANY(%(ids)s) AND status = 'paused'"

# -- expansion (the campaign runner) -------------------------------------------------------------------

#: What the expansion of a slice needs of its campaign.
FOR_EXPANSION = (
    "SELECT id, company_id, connection_id, status, content_type, body, template, content FROM campaigns "
    "WHERE id = %(id)s"
)
RECIPIENTS_IN_SLICE = """
SELECT recipient, variables FROM campaign_recipients
WHERE campaign_id = %(campaign_id)s AND id >= %(first)s AND id <= %(last)s
"""
#: Recipients expanded (``queued_count``: every row created, suppressed ones included, so the expansion sweep
#: and the completion see them done) and those of them suppressed.
ADD_QUEUED = (
    "UPDATE campaigns SET queued_count = queued_count + %(count)s + %(suppressed)s, "
    "suppressed_count = suppressed_count + %(suppressed)s WHERE id = %(id)s"
)

# -- the expansion sweep -------------------------------------------------------------------------------

#: Started campaigns with recipients left to expand (``ix_campaigns_due``: by status).
UNEXPANDED = """
SELECT id, queued_count FROM campaigns
WHERE status IN ('running', 'paused') AND queued_count < recipients_count AND started_at < %(before)s
ORDER BY id
"""

#: The slices (as the start made them) with a recipient that has no message yet.
SLICES_LEFT = f"""
SELECT s.first, s.last FROM ({SLICES}) s
WHERE EXISTS (
  SELECT 1 FROM campaign_recipients r
  WHERE r.campaign_id = %(campaign)s AND r.id BETWEEN s.first AND s.last
    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = r.campaign_id AND m.recipient = r.recipient)
)
ORDER BY s.first
"""


# -- async (the API) ------------------------------------------------------------------------------------


async def insert(conn: AsyncConnection[Any], values: dict[str, Any]) -> dict[str, Any]:
    """A new campaign (``draft``)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(INSERT, values)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], campaign_id: int) -> dict[str, Any] | None:
    """One campaign, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET, {"id": campaign_id})
    return await cursor.fetchone()


async def newest(conn: AsyncConnection[Any], limit: int, company_id: int | None = None) -> list[dict[str, Any]]:
    """The newest campaigns first (of one company, or all)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(LIST, {"limit": limit, "company_id": company_id})
    return await cursor.fetchall()


#: How many of each campaign's messages are in each status *now* (``ix_messages_campaign_status``).
STATES = """
SELECT campaign_id, status, count(*) AS n FROM messages
WHERE campaign_id = ANY(%(ids)s) GROUP BY campaign_id, status
"""
#: The statuses :func:`states` reports (every one, 0 when none).
STATE_NAMES = ("queued", "sending", "sent", "delivered", "read", "failed", "cancelled")


async def states(conn: AsyncConnection[Any], campaign_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Campaign id → status → how many of its messages are in that status now (a state, not a running total)."""
    found: dict[int, dict[str, int]] = {cid: dict.fromkeys(STATE_NAMES, 0) for cid in campaign_ids}
    if not campaign_ids:
        return found
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(STATES, {"ids": list(campaign_ids)})
    for campaign_id, status_name, count in await cursor.fetchall():
        found[campaign_id][str(status_name)] = int(count)
    return found


async def status(conn: AsyncConnection[Any], campaign_id: int, *, for_update: bool = False) -> str | None:
    """The campaign's status (its row locked with ``for_update``), or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(STATUS_FOR_UPDATE if for_update else STATUS, {"id": campaign_id})
    row = await cursor.fetchone()
    return None if row is None else str(row["status"])


async def insert_recipients(conn: AsyncConnection[Any], campaign_id: int, batch: Sequence[Sequence[str]]) -> int:
    """Add ``(recipient, variables JSON)`` pairs (duplicates skipped); how many were new."""
    if not batch:
        return 0
    params = {"campaign_id": campaign_id, "recipients": [r for r, _ in batch], "variables": [v for _, v in batch]}
    cursor = await conn.execute(INSERT_RECIPIENTS, params)
    return int(cursor.rowcount)


async def add_recipients(conn: AsyncConnection[Any], campaign_id: int, count: int) -> dict[str, Any]:
    """Count ``count`` more recipients; the campaign."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(ADD_RECIPIENTS, {"count": count, "id": campaign_id})
    row = await cursor.fetchone()
    assert row is not None
    return row


async def transition(
    conn: AsyncConnection[Any], action: str, campaign_id: int, sources: Sequence[str], reason: str | None = None
) -> dict[str, Any] | None:
    """Move the campaign out of one of ``sources`` by ``action`` (:data:`MOVES`); the campaign, or ``None`` when
    it was in none of them. ``reason``: why a pause happened (the system's pauses)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(TRANSITION_SQL[action], {"id": campaign_id, "sources": list(sources), "reason": reason})
    return await cursor.fetchone()


# -- sync (the start, the scheduler, the campaign runner, the sweep) -------------------------------------


def transition_sync(
    session: Session, action: str, campaign_id: int, sources: Sequence[str], reason: str | None = None
) -> dict[str, Any] | None:
    """:func:`transition` in the session's transaction (the system's pauses: a rule or a quality flag, from the
    ingest worker, a template sync or the scheduler)."""
    params = {"id": campaign_id, "sources": list(sources), "reason": reason}
    row = session.connection().exec_driver_sql(TRANSITION_SQL[action], params).mappings().one_or_none()
    return None if row is None else dict(row)


def running_of_connections(session: Session, connection_ids: Sequence[int]) -> list[int]:
    """The running campaigns of ``connection_ids``."""
    rows = session.connection().exec_driver_sql(RUNNING_OF_CONNECTIONS, {"connections": list(connection_ids)})
    return [int(row[0]) for row in rows]


def get_sync(session: Session, campaign_id: int) -> dict[str, Any] | None:
    """:func:`get` in the session's transaction."""
    row = session.connection().exec_driver_sql(GET, {"id": campaign_id}).mappings().one_or_none()
    return None if row is None else dict(row)


def start(
    session: Session, campaign_id: int, sources: Sequence[str], start_at: Any, *, later: bool, due: bool
) -> dict[str, Any] | None:
    """Schedule the campaign (``later``), or run it now (``due``: only if its time has come); the campaign, or
    ``None`` when it was not in one of ``sources`` (or not due)."""
    sql = SCHEDULE if later else START_DUE if due else START_NOW
    params = {"id": campaign_id, "sources": list(sources), "start_at": start_at}
    row = session.connection().exec_driver_sql(sql, params).mappings().one_or_none()
    return None if row is None else dict(row)


def slices(session: Session, campaign_id: int, size: int) -> list[tuple[int, int]]:
    """``(first, last)`` recipient id of each slice of ``size`` recipients."""
    rows = session.connection().exec_driver_sql(SLICES, {"size": size, "campaign": campaign_id})
    return [(int(first), int(last)) for first, last in rows]


def due(session: Session) -> list[int]:
    """Ids of the scheduled campaigns whose time has come (up to 100), the earliest first."""
    return [int(row[0]) for row in session.connection().exec_driver_sql(DUE)]


def finish(session: Session) -> list[int]:
    """Complete the running campaigns whose every message is final; their ids."""
    return [row[0] for row in session.connection().exec_driver_sql(FINISH)]


def paused_among(session: Session, campaign_ids: list[int]) -> set[int]:
    """Those of ``campaign_ids`` that are paused."""
    return {int(row[0]) for row in session.connection().exec_driver_sql(PAUSED_AMONG, {"ids": campaign_ids})}


def for_expansion(session: Session, campaign_id: int) -> dict[str, Any] | None:
    """:data:`FOR_EXPANSION`, or ``None``."""
    row = session.connection().exec_driver_sql(FOR_EXPANSION, {"id": campaign_id}).mappings().one_or_none()
    return None if row is None else dict(row)


def recipients_in_slice(session: Session, campaign_id: int, first: int, last: int) -> list[tuple[str, Any]]:
    """``(recipient, variables)`` of the recipients with ids ``first`` to ``last``."""
    params = {"campaign_id": campaign_id, "first": first, "last": last}
    return [(row[0], row[1]) for row in session.connection().exec_driver_sql(RECIPIENTS_IN_SLICE, params)]


def add_queued(session: Session, campaign_id: int, count: int, suppressed: int = 0) -> None:
    """Count ``count`` more messages created queued and ``suppressed`` created suppressed."""
    params = {"count": count, "suppressed": suppressed, "id": campaign_id}
    session.connection().exec_driver_sql(ADD_QUEUED, params)


def unexpanded(session: Session, before: Any) -> dict[int, int]:
    """Campaign id → ``queued_count`` of the campaigns started before ``before`` with recipients to expand."""
    rows = session.connection().exec_driver_sql(UNEXPANDED, {"before": before})
    return {int(campaign_id): int(queued) for campaign_id, queued in rows}


def slices_left(session: Session, campaign_id: int, size: int) -> list[tuple[int, int]]:
    """The slices (:data:`SLICES`) with a recipient that has no message yet."""
    rows = session.connection().exec_driver_sql(SLICES_LEFT, {"size": size, "campaign": campaign_id}).all()
    return [(first, last) for first, last in rows]
