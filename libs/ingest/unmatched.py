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
from libs.ingest import store

logger = logging.getLogger(__name__)

#: Webhooks per ``process_webhooks`` job when many were kept for one number.
GROUP = 100

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
        store.lock_keys_shared(session, names)


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
            await store.lock_key(conn, lock_key(source, key))
            ids = await store.kept_for(conn, source, key)
        if ids:
            await enqueue_many_async(client, namespace, _jobs(ids))
            await store.mark_kept_enqueued(conn, ids)
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
            ids = store.sweep_kept(session, older_than_seconds=older_than_seconds, limit=batch)
            if ids:
                enqueue_many(client, namespace, _jobs(ids))
        total += len(ids)
        if len(ids) < batch:
            return total


def _masked(key: str) -> str:
    """A key for logs: the last four characters only (a phone_number_id is not a phone number, but keep it short)."""
    return f"…{key[-4:]}" if len(key) > 4 else key
