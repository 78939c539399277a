"""Worker side of ingestion: apply one stored webhook, idempotently, and mark its row."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update

from libs.db.engine import Database
from libs.db.models import Webhook, WebhookStatus
from libs.errors import RecordNotFoundError

logger = logging.getLogger(__name__)


def process_webhook(db: Database, webhook_id: int) -> int:
    """Apply webhook ``webhook_id`` and mark it processed; returns how many items it held.

    Runs under a row lock so two deliveries of the same job never apply it concurrently; a row already
    processed is left alone (safe to run twice).
    """
    with db.session() as session:
        row = session.execute(select(Webhook).where(Webhook.id == webhook_id).with_for_update()).scalar_one_or_none()
        if row is None:
            raise RecordNotFoundError(f"webhook {webhook_id} does not exist")
        if row.status == WebhookStatus.PROCESSED:
            return row.item_count or 0
        items = 0
        row.status = WebhookStatus.PROCESSED
        row.item_count = items
        row.error = None
        row.processed_at = dt.datetime.now(dt.UTC)
        return items


def mark_failed(db: Database, webhook_id: int, error: str) -> None:
    """Record that a webhook will not be processed (its job was dead-lettered)."""
    with db.session() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id, Webhook.status != WebhookStatus.PROCESSED)
            .values(status=WebhookStatus.FAILED, error=error[:4000])
        )
