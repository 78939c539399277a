"""Worker side of ingestion: parse one stored webhook, apply it, mark its row — all in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import update

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Webhook, WebhookSource, WebhookStatus
from libs.errors import RecordNotFoundError
from libs.ingest.apply import Outcome, apply_baileys, apply_meta
from libs.whatsapp import parse_baileys_events, parse_meta_webhook

logger = logging.getLogger(__name__)

LOCK_WEBHOOK = "SELECT source, status, body FROM webhooks WHERE id = %(id)s FOR UPDATE"
MARK_PROCESSED = """
UPDATE webhooks SET status = 'processed', item_count = %(items)s, error = %(error)s, processed_at = now()
WHERE id = %(id)s
"""

Announce = Callable[[list[contracts.InboundMessageEvent]], None]


def process_webhook(db: Database, webhook_id: int, announce: Announce) -> Outcome | None:
    """Apply webhook ``webhook_id`` and mark it processed; ``None`` when it was processed before.

    Runs under the row's lock, so two deliveries of the same job never apply it concurrently, and a
    processed row is left alone (safe to run twice). New inbound messages are announced just before the
    commit: a crash in between re-announces them on the retry (at least once), never loses them.
    A ``ParseError`` propagates (it is permanent: the job is dead-lettered and the row marked failed).
    """
    with db.session() as session:
        conn = session.connection()
        row = conn.exec_driver_sql(LOCK_WEBHOOK, {"id": webhook_id}).one_or_none()
        if row is None:
            raise RecordNotFoundError(f"webhook {webhook_id} does not exist")
        source, status, body = row
        if status == WebhookStatus.PROCESSED:
            return None
        if source == WebhookSource.META:
            outcome = apply_meta(session, parse_meta_webhook(bytes(body)))
        else:
            outcome = apply_baileys(session, parse_baileys_events(bytes(body)))
        note = "; ".join(dict.fromkeys(outcome.notes))[:4000] or None
        conn.exec_driver_sql(MARK_PROCESSED, {"id": webhook_id, "items": outcome.items, "error": note})
        if outcome.events:
            announce(outcome.events)
    return outcome


def mark_failed(db: Database, webhook_id: int, error: str) -> None:
    """Record that a webhook will not be processed (its job is being dead-lettered)."""
    with db.session() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id, Webhook.status != WebhookStatus.PROCESSED)
            .values(status=WebhookStatus.FAILED, error=error[:4000])
        )
