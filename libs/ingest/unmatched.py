"""Webhooks for numbers not registered yet: kept as ``unmatched``, applied when their connection is created.

A webhook whose inbound messages (Meta ``messages[]``, Baileys ``messages.upsert``) are for a
``phone_number_id`` / bridge instance with no connection is applied for every number zapq knows and kept:
``webhooks.status`` = ``unmatched`` and ``webhooks.unmatched`` = the keys (phone_number_ids or instance
names) whose messages are still to be applied. Statuses, connection updates and system errors of an unknown
number are not kept: they can only concern messages and connections zapq does not have.

When a connection is created (``POST /api/connections``) the webhooks kept for its key are enqueued as
ordinary ``process_webhook`` jobs; a row with ``unmatched`` set is then applied **only** for those keys (and
each key applied is removed), so the part applied the first time is never applied again — re-applying it
could undo later changes (an older contact name, a connection update). The row lock and the forward-only,
once-per-id writes make a repeated job a no-op. The scheduler's webhook sweep enqueues any kept webhook whose
connection exists (an enqueue the API could not do, a connection inserted by other means).

The race "the worker finds no connection" / "the API finds no kept webhook" is closed by an advisory lock
per key: the worker holds it *shared* from the moment it looks again for a connection it did not find until
its transaction (which marks the row) commits; the API takes it *exclusively* after its connection is
committed, then looks for kept webhooks. Whichever comes second sees the other's commit. Workers never wait
for each other (shared), so they cannot deadlock on these locks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from sqlalchemy.orm import Session

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many, enqueue_many_async

logger = logging.getLogger(__name__)

#: Webhooks per ``process_webhooks`` job when many were kept for one number.
GROUP = 100

#: Taken by the worker for each key it keeps a webhook for (``%(keys)s``: lock keys, sorted).
LOCK_SHARED = "SELECT count(pg_advisory_xact_lock_shared(hashtext(k))) FROM unnest(%(keys)s::text[]) AS u(k)"
#: Taken by the API before it looks for the webhooks kept for a new connection's key.
LOCK = "SELECT pg_advisory_xact_lock(hashtext(%(key)s))"

#: The webhooks kept for one key (``%(source)s``, ``%(key)s``): the partial GIN index on ``unmatched``.
KEPT_FOR = """
SELECT id FROM webhooks WHERE status = 'unmatched' AND source = %(source)s AND unmatched @> ARRAY[%(key)s]::text[]
ORDER BY id
"""

#: Kept webhooks whose key has a connection now and that were not enqueued since they were last applied (or
#: were, more than ``%(after)s`` seconds ago: that job was lost).
SWEEP = """
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

MARK_ENQUEUED = "UPDATE webhooks SET enqueued_at = now() WHERE id = ANY(%(ids)s)"
#: The note of a row's error for a key kept (one per key; dropped once the key is applied).
KEPT_NOTE = "no connection for {kind} {key}: its messages are kept until one is created"
KEPT_MARK = ": its messages are kept until one is created"


def lock_key(source: str, key: str) -> str:
    """The Postgres advisory-lock name of one source's key (not a Redis key)."""
    return f"unmatched {source} {key}"


def lock_shared(session: Session, source: str, keys: Iterable[str]) -> None:
    """Hold the keys' locks shared until the session's transaction ends (the worker's side)."""
    names = sorted(lock_key(source, key) for key in keys)
    if names:
        session.connection().exec_driver_sql(LOCK_SHARED, {"keys": names})


def merge_notes(previous: str | None, notes: list[str]) -> str | None:
    """A re-applied row's error: the previous notes without the "kept" ones, then this application's notes."""
    kept = [n for n in (previous or "").split("; ") if n and not n.endswith(KEPT_MARK)]
    merged = "; ".join(dict.fromkeys([*kept, *notes]))
    return merged[:4000] or None


def _jobs(ids: list[int]) -> list[Any]:
    if len(ids) == 1:
        return [contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(ids[0]))]
    return [
        contracts.PROCESS_WEBHOOKS.message(contracts.ProcessWebhooks(ids[start : start + GROUP]))
        for start in range(0, len(ids), GROUP)
    ]


async def enqueue_kept_async(pool: Any, client: aioredis.Redis, namespace: str, source: str, key: str) -> int:
    """Enqueue the webhooks kept for a connection just created and committed (the API's side); returns how many.

    Their rows keep ``unmatched`` until a worker applied them; if this enqueue fails, the sweep does it.
    """
    async with pool.connection() as conn:
        async with conn.transaction():  # the lock only guards the look-up (never held while waiting on a row)
            await conn.execute(LOCK, {"key": lock_key(source, key)})
            cursor = await conn.execute(KEPT_FOR, {"source": source, "key": key})
            ids = [int(row["id"] if isinstance(row, dict) else row[0]) for row in await cursor.fetchall()]
        if ids:
            await enqueue_many_async(client, namespace, _jobs(ids))
            await conn.execute(MARK_ENQUEUED, {"ids": ids})
    if ids:
        logger.info("connection %s %s created: %d kept webhook(s) enqueued", source, _masked(key), len(ids))
    return len(ids)


def sweep_kept(
    db: Database, client: redis.Redis, namespace: str, *, older_than_seconds: int, batch: int = 1_000
) -> int:
    """Enqueue kept webhooks whose connection exists and that were not enqueued in the last
    ``older_than_seconds``; returns how many."""
    total = 0
    while True:
        with db.session() as session:
            params = {"after": older_than_seconds, "limit": batch}
            ids = [int(row[0]) for row in session.connection().exec_driver_sql(SWEEP, params)]
            if ids:
                enqueue_many(client, namespace, _jobs(ids))
        total += len(ids)
        if len(ids) < batch:
            return total


def _masked(key: str) -> str:
    """A key for logs: the last four characters only (a phone_number_id is not a phone number, but keep it short)."""
    return f"…{key[-4:]}" if len(key) > 4 else key
