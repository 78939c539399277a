"""Outbox sweep: enqueue webhooks that were stored but never (or long ago) enqueued."""

from __future__ import annotations

import datetime as dt

import redis
from sqlalchemy import or_, select, update

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Webhook, WebhookStatus
from libs.enqueue import enqueue_many

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
            ids = list(
                session.execute(
                    select(Webhook.id)
                    .where(
                        Webhook.id > last_id,
                        or_(
                            (Webhook.status == WebhookStatus.RECEIVED) & (Webhook.received_at < received_before),
                            (Webhook.status == WebhookStatus.ENQUEUED) & (Webhook.enqueued_at < now - LOST_AFTER),
                        ),
                    )
                    .order_by(Webhook.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return total
            enqueue_many(
                client,
                namespace,
                (contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in ids),
            )
            session.execute(
                update(Webhook).where(Webhook.id.in_(ids)).values(status=WebhookStatus.ENQUEUED, enqueued_at=now)
            )
        total += len(ids)
        last_id = ids[-1]
