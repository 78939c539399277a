"""All SQL of the dead-letter ledger (psycopg ``%(name)s`` parameters): sync through the ``Database`` sessions of
the recorder, the CLI, the API (in a thread) and the sweeps; async for ``/metrics``.

One row per failed job, keyed by its Dramatiq message id (``uq_dead_letters_message_id``): recording is an
upsert, and a row is replayed at most once until the job fails again. The event dispatcher records given-up
deliveries in the same table with the same upsert rule (:mod:`libs.events.dispatch`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlalchemy.orm import Session

COLUMNS = """id, message_id, queue_name, actor_name, args, kwargs, message, reason, error_type, error_message,
traceback, attempts, first_failed_at, last_failed_at, created_at, replay_count, replayed_at, replayed_message_id"""

#: Write a dead letter, or refresh its row when the job failed again after a replay (or later than recorded): the
#: ``RETURNING`` row says the dead letter is new; a redelivered recorder job for the same failure returns none.
RECORD = """
INSERT INTO dead_letters (message_id, queue_name, actor_name, args, kwargs, message, reason, error_type,
                          error_message, traceback, attempts, first_failed_at, last_failed_at)
VALUES (%(message_id)s, %(queue_name)s, %(actor_name)s, %(args)s, %(kwargs)s, %(message)s, %(reason)s,
        %(error_type)s, %(error_message)s, %(traceback)s, %(attempts)s, %(first_failed_at)s, %(last_failed_at)s)
ON CONFLICT (message_id) DO UPDATE SET
  reason = EXCLUDED.reason, error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
  traceback = EXCLUDED.traceback, attempts = EXCLUDED.attempts, last_failed_at = EXCLUDED.last_failed_at,
  message = EXCLUDED.message, replayed_at = NULL, created_at = now()
WHERE dead_letters.replayed_at IS NOT NULL OR dead_letters.last_failed_at < EXCLUDED.last_failed_at
RETURNING id
"""

GET = f"SELECT {COLUMNS} FROM dead_letters WHERE id = %(id)s"
#: A row still dead, locked for its replay (a concurrent replay of it skips it).
CLAIM_FOR_REPLAY = (
    f"SELECT {COLUMNS} FROM dead_letters WHERE id = %(id)s AND replayed_at IS NULL FOR UPDATE SKIP LOCKED"
)
MARK_REPLAYED = """
UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1, replayed_message_id = %(message_id)s
WHERE id = %(id)s
"""
#: The replay's enqueue failed: the row is dead again.
UNMARK_REPLAYED = """
UPDATE dead_letters SET replayed_at = NULL, replay_count = replay_count - 1
WHERE id = %(id)s AND replayed_at IS NOT NULL
"""

#: Dead letters by kind, for ``/metrics``.
COUNT_BY_KIND = """
SELECT queue_name, actor_name, error_type, count(*) AS n FROM dead_letters
GROUP BY queue_name, actor_name, error_type
"""

#: Send jobs among ``%(ids)s`` (message ids) that are dead letters not replayed (the expression index on
#: ``kwargs ->> 'message_id'``): an operator's decision, the send sweep leaves them alone.
DEAD_SENDS = """
SELECT DISTINCT (kwargs ->> 'message_id')::bigint FROM dead_letters
WHERE queue_name IN ('messages.urgent', 'messages', 'messages.low') AND replayed_at IS NULL
  AND kwargs ->> 'message_id' = ANY(%(ids)b::text[])
"""

#: Campaigns among ``%(ids)s`` whose expansion is a dead letter not replayed (the campaign sweep leaves them).
DEAD_EXPANSIONS = """
SELECT DISTINCT (kwargs ->> 'campaign_id')::bigint FROM dead_letters
WHERE queue_name = 'campaigns' AND replayed_at IS NULL AND kwargs ->> 'campaign_id' = ANY(%(ids)b::text[])
"""


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One ledger row (the columns of ``libs.db.models.DeadLetter``)."""

    id: int
    message_id: str
    queue_name: str
    actor_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    #: The original message (``Message.asdict()``), what a replay re-enqueues.
    message: dict[str, Any]
    reason: str
    error_type: str
    error_message: str
    traceback: str | None
    attempts: int
    first_failed_at: dt.datetime | None
    last_failed_at: dt.datetime
    created_at: dt.datetime
    replay_count: int
    replayed_at: dt.datetime | None
    replayed_message_id: str | None

    def as_dict(self, *, full: bool = False, max_error: int | None = None) -> dict[str, Any]:
        """The row as the CLI and the API show it; ``full`` adds arguments, options and the traceback."""
        data: dict[str, Any] = {
            "id": self.id,
            "message_id": self.message_id,
            "queue": self.queue_name,
            "actor": self.actor_name,
            "reason": self.reason,
            "error_type": self.error_type,
            "error_message": self.error_message[:max_error] if max_error else self.error_message,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "created_at": self.created_at,
            "state": "replayed" if self.replayed_at else "dead",
            "replay_count": self.replay_count,
            "replayed_at": self.replayed_at,
            #: The zapq rows the job works on (``message_id`` of a send, ``campaign_id``, ``webhook_id``): what the
            #: dashboard links to.
            "rows": {k: self.kwargs[k] for k in ("message_id", "campaign_id", "webhook_id") if k in self.kwargs},
        }
        if full:
            data.update(
                args=self.args, kwargs=self.kwargs, options=self.message.get("options"), traceback=self.traceback
            )
        return data


_FIELDS = tuple(f.name for f in fields(DeadLetterRow))


def _row(mapping: Any) -> DeadLetterRow:
    return DeadLetterRow(**{name: mapping[name] for name in _FIELDS})


@dataclass(frozen=True, slots=True)
class Filter:
    """Which rows a list / replay / purge applies to."""

    queue: str | None = None
    since: dt.datetime | None = None
    older_than: dt.datetime | None = None
    only_dead: bool = False

    def where(self) -> tuple[str, dict[str, Any]]:
        """The SQL condition of this filter and its parameters."""
        conditions = ["true"]
        if self.queue:
            conditions.append("queue_name = %(queue)s")
        if self.since:
            conditions.append("created_at >= %(since)s")
        if self.older_than:
            conditions.append("created_at < %(older_than)s")
        if self.only_dead:
            conditions.append("replayed_at IS NULL")
        params = {"queue": self.queue, "since": self.since, "older_than": self.older_than}
        return " AND ".join(conditions), params


# -- sync -----------------------------------------------------------------------------------------------


def record(session: Session, values: dict[str, Any]) -> bool:
    """:data:`RECORD` (``values``: the inserted columns, JSON ones as Python objects); True when the dead letter
    is new (no row, or a replayed one that failed again)."""
    params = {**values, "args": Jsonb(values["args"]), "kwargs": Jsonb(values["kwargs"])}
    params["message"] = Jsonb(values["message"])
    return session.connection().exec_driver_sql(RECORD, params).scalar_one_or_none() is not None


def get(session: Session, dead_letter_id: int) -> DeadLetterRow | None:
    """One row, or ``None``."""
    row = session.connection().exec_driver_sql(GET, {"id": dead_letter_id}).mappings().one_or_none()
    return None if row is None else _row(row)


def newest(session: Session, flt: Filter, limit: int) -> list[DeadLetterRow]:
    """The rows ``flt`` selects, newest first."""
    where, params = flt.where()
    sql = f"SELECT {COLUMNS} FROM dead_letters WHERE {where} ORDER BY id DESC LIMIT %(limit)s"
    return [_row(row) for row in session.connection().exec_driver_sql(sql, {**params, "limit": limit}).mappings()]


def ids(session: Session, flt: Filter) -> list[int]:
    """Ids of the rows ``flt`` selects, oldest first."""
    where, params = flt.where()
    sql = f"SELECT id FROM dead_letters WHERE {where} ORDER BY id"
    return [int(row[0]) for row in session.connection().exec_driver_sql(sql, params)]


def claim_for_replay(session: Session, dead_letter_id: int) -> DeadLetterRow | None:
    """The row if it is still dead and no one else is replaying it, locked until the transaction ends."""
    row = session.connection().exec_driver_sql(CLAIM_FOR_REPLAY, {"id": dead_letter_id}).mappings().one_or_none()
    return None if row is None else _row(row)


def mark_replayed(session: Session, dead_letter_id: int, message_id: str) -> None:
    """Claimed by a replay re-enqueueing ``message_id``."""
    session.connection().exec_driver_sql(MARK_REPLAYED, {"id": dead_letter_id, "message_id": message_id})


def unmark_replayed(session: Session, dead_letter_id: int) -> None:
    """:data:`UNMARK_REPLAYED`."""
    session.connection().exec_driver_sql(UNMARK_REPLAYED, {"id": dead_letter_id})


def delete(session: Session, *, ids: list[int] | None = None, older_than: dt.datetime | None = None) -> int:
    """Delete rows by id and / or age; how many were deleted."""
    conditions = []
    if ids is not None:
        conditions.append("id = ANY(%(ids)s)")
    if older_than is not None:
        conditions.append("created_at < %(older_than)s")
    if not conditions:
        raise ValueError("a delete needs ids or an age")
    sql = f"DELETE FROM dead_letters WHERE {' AND '.join(conditions)}"
    return session.connection().exec_driver_sql(sql, {"ids": ids, "older_than": older_than}).rowcount


def dead_sends(session: Session, message_ids: list[int]) -> set[int]:
    """:data:`DEAD_SENDS` among ``message_ids``."""
    rows = session.connection().exec_driver_sql(DEAD_SENDS, {"ids": [str(i) for i in message_ids]})
    return {int(row[0]) for row in rows}


def dead_expansions(session: Session, campaign_ids: list[int]) -> set[int]:
    """:data:`DEAD_EXPANSIONS` among ``campaign_ids``."""
    rows = session.connection().exec_driver_sql(DEAD_EXPANSIONS, {"ids": [str(i) for i in campaign_ids]})
    return {int(row[0]) for row in rows}


# -- async ----------------------------------------------------------------------------------------------


async def count_by_kind(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """``queue_name``, ``actor_name``, ``error_type`` and ``n`` of every kind of dead letter."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(COUNT_BY_KIND)
    return await cursor.fetchall()


# -- queue stats (libs.ops.stats) ---------------------------------------------------------------------------

DEAD_COUNTS_SQL = "SELECT queue_name, count(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY queue_name"

LEDGER_ROW_SQL = """
SELECT id, queue_name, actor_name, reason, error_type, error_message, attempts,
       first_failed_at, last_failed_at, created_at, replayed_at, replay_count
FROM dead_letters WHERE message_id = %s
"""


def dead_counts(db: Any) -> dict[str, int]:
    """Ledger rows not replayed, per queue (sync, SQLAlchemy ``Database``)."""
    with db.session() as session:
        return {queue: int(count) for queue, count in session.execute(text(DEAD_COUNTS_SQL)).all()}


async def dead_counts_async(pool: Any) -> dict[str, int]:
    """Ledger rows not replayed, per queue (psycopg ``AsyncConnectionPool``)."""
    async with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(DEAD_COUNTS_SQL)
        return {queue: int(count) for queue, count in await cursor.fetchall()}


def ledger_row(db: Any, message_id: str) -> Sequence[Any] | None:
    """The ledger row of ``message_id`` as a tuple (sync)."""
    sql = text(LEDGER_ROW_SQL.replace("%s", ":mid"))
    with db.session() as session:
        row = session.execute(sql, {"mid": message_id}).first()
    return tuple(row) if row is not None else None


async def ledger_row_async(pool: Any, message_id: str) -> Sequence[Any] | None:
    """The ledger row of ``message_id`` as a tuple (asyncio)."""
    async with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(LEDGER_ROW_SQL, (message_id,))
        row: Sequence[Any] | None = await cursor.fetchone()
        return row
