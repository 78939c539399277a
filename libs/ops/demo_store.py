"""The demo's rows (SQLAlchemy ORM): its company and Meta connection, and what became of its webhook.

Used by :mod:`libs.ops.demo` only; ``zapq dev up`` seeds the same rows through the API (:mod:`libs.ops.seed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from libs.db.models import Company, Connection, Message, Provider, Webhook, WebhookStatus


@dataclass(frozen=True)
class WebhookOutcome:
    """A webhook once processed (or failed), with the id of the inbound message it stored, if any."""

    status: WebhookStatus
    item_count: int | None
    message_id: int | None


def ensure_connection(
    session: Session, *, company_name: str, phone_number_id: str, display_number: str, access_token: str
) -> tuple[int, int, bool]:
    """``(company id, connection id, created)`` of the Meta test connection for ``phone_number_id``: created
    once with its company, else given ``access_token`` again; its service window is off (a test number)."""
    found = session.execute(
        select(Connection).where(Connection.provider == Provider.META, Connection.phone_number_id == phone_number_id)
    ).scalar_one_or_none()
    if found is not None:
        found.access_token = access_token
        found.service_window = "off"
        return found.company_id, found.id, False
    company = Company(name=company_name)
    session.add(company)
    session.flush()
    connection = Connection(
        company_id=company.id,
        name="Demo number (fake Meta)",
        provider=Provider.META,
        phone_number_id=phone_number_id,
        display_phone_number=display_number,
        access_token=access_token,
        service_window="off",  # a test number (README: WhatsApp rules)
    )
    session.add(connection)
    session.flush()
    return company.id, connection.id, True


def webhook_outcome(session: Session, webhook_id: int, *, phone_number_id: str, wamid: str) -> WebhookOutcome | None:
    """What became of the webhook once it is processed or failed; ``None`` while it is not yet."""
    row = session.get(Webhook, webhook_id)
    if row is None or row.status not in (WebhookStatus.PROCESSED, WebhookStatus.FAILED):
        return None
    stored = session.execute(
        select(Message.id)
        .join(Connection, Connection.id == Message.connection_id)
        .where(Connection.phone_number_id == phone_number_id, Message.external_id == wamid)
    ).scalar_one_or_none()
    return WebhookOutcome(status=row.status, item_count=row.item_count, message_id=stored)
