"""Periodic event work (the scheduler's ``maintenance`` queue): wake endpoints with due deliveries, prune.

The pumps schedule their own wake-ups and the publisher kicks endpoints as events arrive; this sweep is the
safety net for what Redis lost (a restart without persistence, a crashed pump's jobs): deliveries are rows in
Postgres, so every endpoint with due work is kicked again within a minute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Message

from libs.db.engine import Database
from libs.events import store
from libs.events.dispatch import MAX_WAKE_S
from libs.events.kicks import Kicks

#: Events (and, with them, their deliveries and attempts) deleted per statement when pruning.
PRUNE_BATCH = 5_000


def sweep_deliveries(
    db: Database, client: redis.Redis, namespace: str, enqueue_delayed: Callable[[Message[Any], int], Any]
) -> int:
    """Kick every enabled endpoint with due deliveries (or stale in-flight ones), and schedule a wake-up for
    each whose next delivery is due later (``enqueue_delayed(message, delay_ms)``; a scheduled one is kept),
    after promoting the heads of conversations that lost theirs; returns how many endpoints were kicked."""
    with db.session() as session:
        conn = session.connection()
        headless = conn.exec_driver_sql(store.HEADLESS).all()
        if headless:
            keys = {(endpoint_id, conversation) for endpoint_id, conversation in headless}
            ordered = sorted(keys)
            conn.exec_driver_sql(store.LOCK_CONVERSATIONS, {"locks": store.lock_keys(keys)})
            conn.exec_driver_sql(
                store.PROMOTE, {"endpoints": [e for e, _ in ordered], "conversations": [c for _, c in ordered]}
            )
        rows = conn.exec_driver_sql(store.NEXT_DUE_BY_ENDPOINT).all()
    kicks = Kicks(namespace)
    due = [endpoint_id for endpoint_id, at, now in rows if at <= now]
    kicks.kick(client, due)
    for endpoint_id, at, now in rows:
        if at > now:
            kicks.wake(client, enqueue_delayed, endpoint_id, min(MAX_WAKE_S, (at - now).total_seconds()))
    return len(due)


def prune_events(db: Database, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """Delete published events older than the retention period whose deliveries are all finished."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    total = 0
    while True:
        with db.session() as session:
            deleted = (
                session.connection()
                .exec_driver_sql(store.PRUNE_EVENTS, {"cutoff": cutoff, "limit": PRUNE_BATCH})
                .rowcount
            )
        total += deleted or 0
        if not deleted or deleted < PRUNE_BATCH:
            return total
