"""All SQL of the ``webhooks`` table (psycopg ``%(name)s`` parameters): async for the edge and the API, sync for
the ingest worker and the scheduler's sweeps.

Row states: ``received`` (stored by the edge) → ``enqueued`` (its job is in Redis) → ``processed``; or
``unmatched`` (messages kept for numbers without a connection, :mod:`libs.ingest.unmatched`), or ``failed``
(its job was dead-lettered; a replay puts it back to ``enqueued``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from sqlalchemy import text
from sqlalchemy.orm import Session

# -- the edge -------------------------------------------------------------------------------------------

#: Many webhooks in one statement (group commit); an identical body stored before is skipped.
INSERT_MANY = """
INSERT INTO webhooks (source, dedup_key, body, status, traceparent)
SELECT * FROM unnest(
  %(sources)b::text[], %(keys)b::text[], %(bodies)b::bytea[], %(statuses)b::text[], %(traceparents)b::text[]
)
ON CONFLICT (source, dedup_key) DO NOTHING
RETURNING id, source, dedup_key
"""

#: Rows a worker already holds (it took the job before this ran) are skipped rather than waited for: the
#: worker marks them processed, or, if it fails, they stay ``received`` and the outbox sweep enqueues them
#: again. Waiting would tie a pool connection of the edge to the worker's transaction.
#: Each id is its own primary-key probe (``LATERAL``): asked as ``id = ANY(…) AND status = 'received'``, the planner
#: could read the whole ``ix_webhooks_unfinished`` instead — every unfinished row and every dead entry the churn leaves
#: in it until a vacuum — and filtered by id (70 ms and 10,000 buffers for 20 rows with 50,000 dead entries; in one
#: peak run, 144–213 µs of Postgres CPU per row marked, 12 % of its statement CPU).
MARK_ENQUEUED = """
UPDATE webhooks w SET status = 'enqueued', enqueued_at = now()
FROM (
  SELECT x.id FROM unnest(%(ids)b::bigint[]) AS v(id)
  CROSS JOIN LATERAL (SELECT id FROM webhooks WHERE id = v.id AND status = 'received' FOR UPDATE SKIP LOCKED) x
) s
WHERE w.id = s.id
"""

# -- the ingest worker ----------------------------------------------------------------------------------

LOCK_ONE = """
SELECT source, status, body, unmatched, item_count, error, traceparent FROM webhooks WHERE id = %(id)s FOR UPDATE
"""
#: In id order, so two groups sharing rows (a sweep's re-enqueue) lock them in the same order.
LOCK_MANY = """
SELECT id, source, status, body, unmatched, item_count, error, traceparent FROM webhooks WHERE id = ANY(%(ids)s)
ORDER BY id FOR UPDATE
"""
#: ``processed``, or ``unmatched`` with the numbers still kept (a JSON array per row, else NULL).
MARK_PROCESSED = """
UPDATE webhooks w SET status = CASE WHEN v.unmatched IS NULL THEN 'processed' ELSE 'unmatched' END,
  unmatched = CASE WHEN v.unmatched IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(v.unmatched)) END,
  item_count = v.items, error = v.error, processed_at = now()
FROM unnest(%(ids)b::bigint[], %(items)b::int[], %(errors)b::text[], %(unmatched)b::jsonb[])
  AS v(id, items, error, unmatched)
WHERE w.id = v.id
"""
#: The job will not process the row again (it is being dead-lettered).
MARK_FAILED = "UPDATE webhooks SET status = 'failed', error = %(error)s WHERE id = %(id)s AND status <> 'processed'"
#: A replayed webhook goes back to the outbox: enqueued again, so the sweep re-enqueues it should its job be lost.
REOPEN_FAILED = """
UPDATE webhooks SET status = 'enqueued', enqueued_at = now() WHERE id = ANY(%(ids)s) AND status = 'failed'
"""

# -- the outbox sweep -----------------------------------------------------------------------------------

#: Unfinished rows after ``%(after_id)s``: received long enough ago, or enqueued so long ago that the job was lost.
SWEEP_DUE = """
SELECT id FROM webhooks
WHERE id > %(after_id)s
  AND ((status = 'received' AND received_at < %(received_before)s)
       OR (status = 'enqueued' AND enqueued_at < %(enqueued_before)s))
ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
SWEEP_MARK = "UPDATE webhooks SET status = 'enqueued', enqueued_at = %(at)s WHERE id = ANY(%(ids)s)"

# -- kept webhooks (libs.ingest.unmatched) ----------------------------------------------------------------

#: Taken by the worker for each key it keeps a webhook for (``%(keys)s``: lock keys, sorted).
LOCK_KEYS_SHARED = "SELECT count(pg_advisory_xact_lock_shared(hashtext(k))) FROM unnest(%(keys)b::text[]) AS u(k)"
#: Taken by the API before it looks for the webhooks kept for a new connection's key.
LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtext(%(key)s))"

#: The webhooks kept for one key (``%(source)s``, ``%(key)s``): the partial GIN index on ``unmatched``.
KEPT_FOR = """
SELECT id FROM webhooks WHERE status = 'unmatched' AND source = %(source)s AND unmatched @> ARRAY[%(key)s]::text[]
ORDER BY id
"""

#: Kept webhooks whose key has a connection now and that were not enqueued since they were last applied (or
#: were, more than ``%(after)s`` seconds ago: that job was lost).
SWEEP_KEPT = """
WITH keys AS (
  SELECT 'meta' AS source, array_agg(phone_number_id)::text[] AS keys FROM connections WHERE phone_number_id IS NOT NULL
  UNION ALL
  SELECT 'baileys', array_agg(bridge_instance)::text[] FROM connections WHERE bridge_instance IS NOT NULL
), due AS (
  SELECT w.id FROM webhooks w JOIN keys k ON k.source = w.source
  WHERE w.status = 'unmatched' AND w.unmatched && k.keys
    AND (w.enqueued_at IS NULL OR w.enqueued_at <= w.processed_at
         OR w.enqueued_at < now() - make_interval(secs => %(after)s))
  ORDER BY w.id LIMIT %(limit)s
  FOR UPDATE OF w SKIP LOCKED
)
UPDATE webhooks w SET enqueued_at = now() FROM due WHERE w.id = due.id RETURNING w.id
"""

MARK_KEPT_ENQUEUED = "UPDATE webhooks SET enqueued_at = now() WHERE id = ANY(%(ids)s)"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of storing one webhook: its row id, or ``None`` when it duplicates a stored one."""

    webhook_id: int | None

    @property
    def duplicate(self) -> bool:
        """True when an identical body was stored before."""
        return self.webhook_id is None


# -- async (the edge, the API) ----------------------------------------------------------------------------


async def insert_many(
    conn: AsyncConnection[Any],
    sources: list[str],
    keys: list[str],
    bodies: list[bytes],
    traceparents: list[str | None],
) -> list[tuple[int, str, str]]:
    """Store webhooks as ``received`` in one statement (each with the ``traceparent`` of the traced request that
    stored it, else None); ``(id, source, dedup_key)`` of each row created."""
    cursor = conn.cursor(row_factory=tuple_row)
    params = {
        "sources": sources,
        "keys": keys,
        "bodies": bodies,
        "statuses": ["received"] * len(sources),
        "traceparents": traceparents,
    }
    await cursor.execute(INSERT_MANY, params)
    return await cursor.fetchall()


async def mark_enqueued(conn: AsyncConnection[Any], webhook_ids: list[int]) -> None:
    """:data:`MARK_ENQUEUED` (the edge, once their jobs are in Redis)."""
    await conn.execute(MARK_ENQUEUED, {"ids": webhook_ids}, prepare=True)


async def lock_key(conn: AsyncConnection[Any], key: str) -> None:
    """Hold one key's advisory lock exclusively until the transaction ends (the API's side)."""
    await conn.execute(LOCK_KEY, {"key": key})


async def kept_for(conn: AsyncConnection[Any], source: str, key: str) -> list[int]:
    """Ids of the webhooks kept for ``key`` of ``source``."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(KEPT_FOR, {"source": source, "key": key})
    return [int(row[0]) for row in await cursor.fetchall()]


async def mark_kept_enqueued(conn: AsyncConnection[Any], webhook_ids: list[int]) -> None:
    """Note that the jobs of kept webhooks were enqueued (they stay ``unmatched`` until applied)."""
    await conn.execute(MARK_KEPT_ENQUEUED, {"ids": webhook_ids})


# -- sync (the ingest worker, the scheduler, a dead-letter replay) ----------------------------------------


def lock_one(session: Session, webhook_id: int) -> Any:
    """The row ``(source, status, body, unmatched, item_count, error, traceparent)`` locked, or ``None``."""
    return session.connection().exec_driver_sql(LOCK_ONE, {"id": webhook_id}).one_or_none()


def lock_many(session: Session, webhook_ids: list[int]) -> list[Any]:
    """The rows ``(id, source, status, body, unmatched, item_count, error, traceparent)`` that exist, locked in id
    order."""
    return list(session.connection().exec_driver_sql(LOCK_MANY, {"ids": sorted(set(webhook_ids))}).all())


def mark_processed(
    session: Session, ids: list[int], items: list[int], errors: list[str | None], unmatched: list[Any]
) -> None:
    """:data:`MARK_PROCESSED` for the rows ``ids`` (``unmatched``: a Jsonb array of kept numbers, or None)."""
    params = {"ids": ids, "items": items, "errors": errors, "unmatched": unmatched}
    session.connection().exec_driver_sql(MARK_PROCESSED, params)


def mark_failed(session: Session, webhook_id: int, error: str) -> None:
    """:data:`MARK_FAILED` (``error`` cut to 4,000 characters)."""
    session.connection().exec_driver_sql(MARK_FAILED, {"id": webhook_id, "error": error[:4000]})


def reopen_failed(session: Session, webhook_ids: list[int]) -> None:
    """:data:`REOPEN_FAILED` in the session's transaction."""
    session.connection().exec_driver_sql(REOPEN_FAILED, {"ids": webhook_ids})


def sweep_due(
    session: Session, *, after_id: int, received_before: dt.datetime, enqueued_before: dt.datetime, limit: int
) -> list[int]:
    """Ids of up to ``limit`` unfinished rows after ``after_id`` (:data:`SWEEP_DUE`), locked."""
    params = {
        "after_id": after_id,
        "received_before": received_before,
        "enqueued_before": enqueued_before,
        "limit": limit,
    }
    return [int(row[0]) for row in session.connection().exec_driver_sql(SWEEP_DUE, params)]


def sweep_mark(session: Session, webhook_ids: list[int], at: dt.datetime) -> None:
    """Mark swept rows ``enqueued`` at ``at``."""
    session.connection().exec_driver_sql(SWEEP_MARK, {"ids": webhook_ids, "at": at})


def lock_keys_shared(session: Session, keys: list[str]) -> None:
    """Hold the advisory locks of ``keys`` (sorted) shared until the transaction ends (the worker's side)."""
    session.connection().exec_driver_sql(LOCK_KEYS_SHARED, {"keys": keys})


def sweep_kept(session: Session, *, older_than_seconds: int, limit: int) -> list[int]:
    """Ids of kept webhooks due again (:data:`SWEEP_KEPT`), marked enqueued now."""
    params = {"after": older_than_seconds, "limit": limit}
    return [int(row[0]) for row in session.connection().exec_driver_sql(SWEEP_KEPT, params)]


#: Webhooks kept for numbers without a connection (``libs.ingest.unmatched``; a partial index).
UNMATCHED_SQL = "SELECT count(*) FROM webhooks WHERE status = 'unmatched'"


def unmatched_count(db: Any) -> int:
    """Webhooks kept for numbers without a connection (sync)."""
    with db.session() as session:
        return int(session.execute(text(UNMATCHED_SQL)).scalar_one())


async def unmatched_count_async(pool: Any) -> int:
    """Webhooks kept for numbers without a connection (asyncio)."""
    async with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(UNMATCHED_SQL)
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0
