"""Worker side of ingestion: parse one stored webhook, apply it, mark its row — all in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
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
        payload = without_nul(bytes(body))
        if source == WebhookSource.META:
            outcome = apply_meta(session, parse_meta_webhook(payload))
        else:
            outcome = apply_baileys(session, parse_baileys_events(payload))
        note = "; ".join(dict.fromkeys(outcome.notes))[:4000] or None
        conn.exec_driver_sql(MARK_PROCESSED, {"id": webhook_id, "items": outcome.items, "error": note})
        if outcome.events:
            announce(outcome.events)
    return outcome


def without_nul(body: bytes) -> bytes | dict[str, Any]:
    """``body`` for the parsers, with U+0000 dropped from every string and key when it has any.

    JSON allows ``\\u0000``, but no Postgres text or jsonb value can hold it: one such character anywhere in a
    batch (a message text, a profile name) would fail the whole webhook on every attempt.
    """
    if b"\\u0000" not in body:
        return body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # the parser reports it
    if not isinstance(data, dict):
        return body
    stack: list[Any] = [data]
    while stack:  # iterative: the parser's depth limit is checked later, on the cleaned value
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, value in items:
            if isinstance(value, str):
                value = value.replace("\x00", "")
            elif isinstance(value, dict | list):
                stack.append(value)
            node[key.replace("\x00", "") if isinstance(key, str) else key] = value
    return data


def mark_failed(db: Database, webhook_id: int, error: str) -> None:
    """Record that a webhook will not be processed (its job is being dead-lettered)."""
    with db.session() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id, Webhook.status != WebhookStatus.PROCESSED)
            .values(status=WebhookStatus.FAILED, error=error[:4000])
        )
