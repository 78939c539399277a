"""The outbox sweep: stored-but-not-enqueued webhooks are enqueued once; lost 'enqueued' ones again."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg

from libs.db.engine import Database
from libs.db.models import WebhookStatus
from libs.ingest import store
from libs.ingest.sweep import sweep_webhooks
from libs.settings import Settings
from tests.ingest import factories as f

NOW = dt.datetime.now(dt.UTC)


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def body(n: int) -> bytes:
    return f.dumps(f.meta_payload(f.meta_change(messages=[f.meta_message(f"wamid.S{n}", "text", {"body": "x"})])))


def queued_ids(broker: Any, settings: Settings) -> list[int]:
    return [k["webhook_id"] for k in f.queued_kwargs(broker.client, settings.redis_namespace, "webhooks")]


def test_sweep_enqueues_old_received_and_lost_enqueued_rows_once(db: Database, broker: Any, settings: Settings) -> None:
    # Given rows in every state and age
    old_received = f.webhook_row(db, body(1), received_at=ago(seconds=120))
    young_received = f.webhook_row(db, body(2), received_at=ago(seconds=10))
    lost_enqueued = f.webhook_row(
        db, body(3), status=WebhookStatus.ENQUEUED, received_at=ago(hours=3), enqueued_at=ago(hours=2)
    )
    recent_enqueued = f.webhook_row(
        db, body(4), status=WebhookStatus.ENQUEUED, received_at=ago(minutes=30), enqueued_at=ago(minutes=30)
    )
    f.webhook_row(db, body(5), status=WebhookStatus.PROCESSED, received_at=ago(hours=5))
    f.webhook_row(db, body(6), status=WebhookStatus.FAILED, received_at=ago(hours=5))
    # When the sweep runs with a 60 s threshold
    swept = sweep_webhooks(db, broker.client, settings.redis_namespace, older_than_seconds=60, now=NOW)
    # Then the old 'received' row and the lost 'enqueued' row are enqueued, and marked so
    assert swept == 2
    assert sorted(queued_ids(broker, settings)) == sorted([old_received, lost_enqueued])
    for webhook_id in (old_received, lost_enqueued):
        row = f.webhook(db, webhook_id)
        assert (row.status, row.enqueued_at) == (WebhookStatus.ENQUEUED, NOW)
    assert f.webhook(db, young_received).status == WebhookStatus.RECEIVED
    assert f.webhook(db, recent_enqueued).enqueued_at == ago(minutes=30)
    # When it runs again
    again = sweep_webhooks(db, broker.client, settings.redis_namespace, older_than_seconds=60, now=NOW)
    # Then it finds nothing new: each job was enqueued once
    assert again == 0
    assert len(queued_ids(broker, settings)) == 2


def test_sweep_pages_through_more_rows_than_one_batch(
    db: Database, broker: Any, settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setattr("libs.ingest.sweep.BATCH", 2)
    ids = [f.webhook_row(db, body(n), received_at=ago(minutes=5)) for n in range(5)]
    assert sweep_webhooks(db, broker.client, settings.redis_namespace, older_than_seconds=60, now=NOW) == 5
    assert queued_ids(broker, settings) == ids


def test_periodic_actor_sweeps_with_the_configured_threshold(db: Database, broker: Any, settings: Settings) -> None:
    from services.scheduler.actors import sweep_webhooks as periodic

    older = f.webhook_row(db, body(1), received_at=ago(seconds=settings.webhook_sweep_after_seconds + 60))
    f.webhook_row(db, body(2))  # just received: the edge is still enqueueing it
    periodic.fn()
    assert queued_ids(broker, settings) == [older]


def test_the_edges_mark_moves_only_free_received_rows_and_never_waits_for_a_worker(
    db: Database, settings: Settings
) -> None:
    # Given webhooks received, one of them held by a worker (its row locked), one processed, one already enqueued
    free = [f.webhook_row(db, body(n)) for n in (10, 11)]
    held = f.webhook_row(db, body(12))
    processed = f.webhook_row(db, body(13), status=WebhookStatus.PROCESSED)
    enqueued = f.webhook_row(db, body(14), status=WebhookStatus.ENQUEUED, enqueued_at=ago(minutes=5))
    with psycopg.connect(settings.libpq_url) as worker:
        worker.execute("SELECT id FROM webhooks WHERE id = %s FOR UPDATE", (held,))

        # When the edge marks them all enqueued (its jobs are in Redis) while the worker holds its row
        async def mark() -> None:
            async with await psycopg.AsyncConnection.connect(settings.libpq_url, autocommit=True) as conn:
                await conn.execute("SET statement_timeout = '5s'")  # a wait on the worker's lock fails the test
                await store.mark_enqueued(conn, [*free, held, processed, enqueued, 10**12])

        asyncio.run(mark())
    # Then the free received rows are enqueued; the held one is left to its worker; the others are untouched
    assert [f.webhook(db, i).status for i in free] == [WebhookStatus.ENQUEUED] * 2
    assert all(f.webhook(db, i).enqueued_at is not None for i in free)
    assert f.webhook(db, held).status == WebhookStatus.RECEIVED
    assert f.webhook(db, processed).status == WebhookStatus.PROCESSED
    assert f.webhook(db, enqueued).enqueued_at == ago(minutes=5)
