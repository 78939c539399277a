"""Worker side of ingestion: parse one stored webhook, apply it, mark its row — all in one transaction."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import select, update

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Webhook, WebhookSource, WebhookStatus
from libs.errors import RecordNotFoundError
from libs.ingest.apply import Outcome, apply_baileys, apply_meta
from libs.whatsapp import parse_baileys_events, parse_meta_webhook

logger = logging.getLogger(__name__)

Announce = Callable[[list[contracts.InboundMessageEvent]], None]


def process_webhook(db: Database, webhook_id: int, announce: Announce) -> Outcome | None:
    """Apply webhook ``webhook_id`` and mark it processed; ``None`` when it was processed before.

    Runs under the row's lock, so two deliveries of the same job never apply it concurrently, and a
    processed row is left alone (safe to run twice). New inbound messages are announced just before the
    commit: a crash in between re-announces them on the retry (at least once), never loses them.
    A ``ParseError`` propagates (it is permanent: the job is dead-lettered and the row marked failed).
    """
    with db.session() as session:
        row = session.execute(select(Webhook).where(Webhook.id == webhook_id).with_for_update()).scalar_one_or_none()
        if row is None:
            raise RecordNotFoundError(f"webhook {webhook_id} does not exist")
        if row.status == WebhookStatus.PROCESSED:
            return None
        if row.source == WebhookSource.META:
            outcome = apply_meta(session, parse_meta_webhook(row.body))
        else:
            outcome = apply_baileys(session, parse_baileys_events(row.body))
        row.status = WebhookStatus.PROCESSED
        row.item_count = outcome.items
        row.error = "; ".join(dict.fromkeys(outcome.notes))[:4000] or None
        row.processed_at = dt.datetime.now(dt.UTC)
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
