"""Outbox sweep: enqueue webhooks that were stored but never (or long ago) enqueued."""

from __future__ import annotations

import datetime as dt

import redis

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.ingest import store

#: An 'enqueued' row this old was lost with Redis (a restart without persistence): enqueue it again.
LOST_AFTER = dt.timedelta(hours=1)
BATCH = 1_000


def sweep_webhooks(
    db: Database,
    client: redis.Redis,
    namespace: str,
    *,
    older_than_seconds: int,
    now: dt.datetime | None = None,
) -> int:
    """Enqueue every unfinished webhook older than ``older_than_seconds``; returns how many."""
    now = now or dt.datetime.now(dt.UTC)
    received_before = now - dt.timedelta(seconds=older_than_seconds)
    total = 0
    last_id = 0
    while True:
        with db.session() as session:
            ids = store.sweep_due(
                session,
                after_id=last_id,
                received_before=received_before,
                enqueued_before=now - LOST_AFTER,
                limit=BATCH,
            )
            if not ids:
                return total
            enqueue_many(
                client,
                namespace,
                (contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in ids),
            )
            store.sweep_mark(session, ids, now)
        total += len(ids)
        last_id = ids[-1]
