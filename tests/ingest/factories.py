"""Row factories, payload builders and read-back helpers for the ingestion tests.

Rows are inserted through the ORM (``db.session()``); payloads follow Meta's documented shapes (doc section A3)
and Evolution API envelopes (section C).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, cast

import redis
from dramatiq import Message as DramatiqMessage
from sqlalchemy import func, select

from libs.db.engine import Database
from libs.db.models import (
    Campaign,
    CampaignStatus,
    Company,
    Connection,
    ConnectionStatus,
    Contact,
    DeadLetter,
    Direction,
    Message,
    MessageStatus,
    PendingStatus,
    Provider,
    Webhook,
    WebhookSource,
    WebhookStatus,
)
from libs.whatsapp import meta_dedup_key

FIXTURES = Path(__file__).parent.parent / "whatsapp" / "fixtures"
WABA = "102290129340398"
NUMBER_ID = "106540352242922"
DISPLAY = "15550783881"
CUSTOMER = "16505551234"
INSTANCE = "sales-br"


def fixture(name: str) -> bytes:
    """A documented example payload, byte for byte."""
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    """A documented example payload, decoded."""
    data: dict[str, Any] = json.loads(fixture(name))
    return data


def dumps(payload: dict[str, Any]) -> bytes:
    """Serialise like Meta signs: ASCII-escaped, compact."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()


# --- Meta payloads --------------------------------------------------------------------------------------------


def meta_payload(*changes: dict[str, Any], waba: str = WABA) -> dict[str, Any]:
    """A one-entry Meta webhook holding ``changes``."""
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": list(changes)}]}


def meta_change(number_id: str = NUMBER_ID, field: str = "messages", **value: Any) -> dict[str, Any]:
    """One ``changes[]`` item with metadata for ``number_id``."""
    body = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY, "phone_number_id": number_id},
        **value,
    }
    return {"field": field, "value": body}


def meta_message(
    wamid: str, msg_type: str, body: Any = None, *, sender: str = CUSTOMER, **extra: Any
) -> dict[str, Any]:
    """One ``messages[]`` item with its type object."""
    item: dict[str, Any] = {"from": sender, "id": wamid, "timestamp": "1749416383", "type": msg_type}
    if body is not None:
        item[msg_type] = body
    item.update(extra)
    return item


def meta_status(wamid: str, status: str, *, timestamp: int = 1750030080, **extra: Any) -> dict[str, Any]:
    """One ``statuses[]`` item."""
    return {"id": wamid, "status": status, "timestamp": str(timestamp), "recipient_id": CUSTOMER, **extra}


def meta_statuses(*statuses: dict[str, Any]) -> dict[str, Any]:
    """A webhook carrying only ``statuses``."""
    return meta_payload(meta_change(statuses=list(statuses)))


def failed_status(wamid: str, *, code: int = 131049, title: str = "Not delivered", timestamp: int = 1751142888) -> dict:
    """A failed status with one error, as in Meta's documented example."""
    error = {"code": code, "title": title, "message": title, "error_data": {"details": title}}
    return meta_status(wamid, "failed", timestamp=timestamp, errors=[error])


# --- Evolution API envelopes ----------------------------------------------------------------------------------


def evolution(event: str, data: Any, *, instance: str = INSTANCE, when: str = "2025-10-21T11:40:39.000Z") -> dict:
    """An Evolution API webhook envelope."""
    return {
        "event": event,
        "instance": instance,
        "data": data,
        "destination": "https://zapq.example/webhooks/baileys",
        "date_time": when,
        "sender": "5511888888888@s.whatsapp.net",
        "server_url": "http://evolution:8080",
        "apikey": None,
    }


# --- rows -----------------------------------------------------------------------------------------------------


def company(db: Database, name: str = "Acme") -> int:
    """Insert a company; returns its id."""
    with db.session() as session:
        row = Company(name=name)
        session.add(row)
        session.flush()
        return row.id


def meta_connection(
    db: Database, company_id: int, *, number_id: str = NUMBER_ID, status: ConnectionStatus = ConnectionStatus.ACTIVE
) -> int:
    """Insert a Meta Cloud API connection for ``number_id``; returns its id."""
    with db.session() as session:
        row = Connection(
            company_id=company_id,
            provider=Provider.META,
            status=status,
            phone_number_id=number_id,
            waba_id=WABA,
            display_phone_number=DISPLAY,
            access_token="token",
        )
        session.add(row)
        session.flush()
        return row.id


def baileys_connection(
    db: Database, company_id: int, *, instance: str = INSTANCE, status: ConnectionStatus = ConnectionStatus.ACTIVE
) -> int:
    """Insert a Baileys-bridge connection for ``instance``; returns its id."""
    with db.session() as session:
        row = Connection(
            company_id=company_id,
            provider=Provider.BAILEYS,
            status=status,
            bridge_url="http://evolution:8080",
            bridge_instance=instance,
            bridge_api_key="key",
        )
        session.add(row)
        session.flush()
        return row.id


def campaign(db: Database, company_id: int, connection_id: int, *, sent_count: int = 0) -> int:
    """Insert a running campaign (delivery counters zero, ``sent_count`` as given); returns its id."""
    with db.session() as session:
        row = Campaign(
            company_id=company_id,
            connection_id=connection_id,
            name="spring",
            status=CampaignStatus.RUNNING,
            sent_count=sent_count,
        )
        session.add(row)
        session.flush()
        return row.id


def outbound(
    db: Database,
    company_id: int,
    connection_id: int,
    *,
    external_id: str | None = None,
    status: MessageStatus = MessageStatus.SENT,
    campaign_id: int | None = None,
    recipient: str = CUSTOMER,
) -> int:
    """Insert an outbound message (by default already ``sent`` with its wamid); returns its id."""
    with db.session() as session:
        row = Message(
            company_id=company_id,
            connection_id=connection_id,
            campaign_id=campaign_id,
            direction=Direction.OUTBOUND,
            status=status,
            recipient=recipient,
            body="hi",
            external_id=external_id,
        )
        session.add(row)
        session.flush()
        return row.id


def webhook_row(
    db: Database,
    body: bytes,
    *,
    source: WebhookSource = WebhookSource.META,
    status: WebhookStatus = WebhookStatus.RECEIVED,
    received_at: dt.datetime | None = None,
    enqueued_at: dt.datetime | None = None,
) -> int:
    """Insert a stored webhook as the edge would; returns its id."""
    with db.session() as session:
        row = Webhook(source=source, dedup_key=meta_dedup_key(body), body=body, status=status, enqueued_at=enqueued_at)
        if received_at is not None:
            row.received_at = received_at
        session.add(row)
        session.flush()
        return row.id


# --- read-back ------------------------------------------------------------------------------------------------


def webhook(db: Database, webhook_id: int) -> Webhook:
    """The webhook row ``webhook_id``."""
    with db.session() as session:
        row = session.get(Webhook, webhook_id)
        assert row is not None
        return row


def webhooks(db: Database) -> list[Webhook]:
    """Every webhook row, by id."""
    with db.session() as session:
        return list(session.execute(select(Webhook).order_by(Webhook.id)).scalars())


def message(db: Database, message_id: int) -> Message:
    """The message row ``message_id``."""
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None
        return row


def message_by_external_id(db: Database, external_id: str) -> Message:
    """The one message stored under ``external_id``."""
    with db.session() as session:
        return session.execute(select(Message).where(Message.external_id == external_id)).scalar_one()


def messages(db: Database) -> list[Message]:
    """Every message row, by id."""
    with db.session() as session:
        return list(session.execute(select(Message).order_by(Message.id)).scalars())


def contacts(db: Database) -> list[Contact]:
    """Every contact row, by id."""
    with db.session() as session:
        return list(session.execute(select(Contact).order_by(Contact.id)).scalars())


def connection(db: Database, connection_id: int) -> Connection:
    """The connection row ``connection_id``."""
    with db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return row


def pending(db: Database) -> list[PendingStatus]:
    """Every pending status row, by id."""
    with db.session() as session:
        return list(session.execute(select(PendingStatus).order_by(PendingStatus.id)).scalars())


def dead_letters(db: Database) -> list[DeadLetter]:
    """Every dead-letter ledger row, by id."""
    with db.session() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def counters(db: Database, campaign_id: int) -> dict[str, int]:
    """A campaign's delivery counters."""
    with db.session() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return {
            "sent": row.sent_count,
            "delivered": row.delivered_count,
            "read": row.read_count,
            "failed": row.failed_count,
        }


def count(db: Database, model: type[Any]) -> int:
    """Rows in ``model``'s table."""
    with db.session() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def queued_kwargs(client: redis.Redis, namespace: str, queue: str) -> list[dict[str, Any]]:
    """The keyword arguments of every message waiting in ``queue``, in queue order."""
    ids = cast(list[bytes], client.lrange(f"{namespace}:{queue}", 0, -1))
    out = []
    for redis_id in ids:
        data = cast(bytes | None, client.hget(f"{namespace}:{queue}.msgs", redis_id.decode()))
        assert data is not None, f"message {redis_id!r} listed in {queue} but not stored"
        out.append(dict(DramatiqMessage.decode(data).kwargs))
    return out


def events(db: Database, event_type: str | None = None) -> list[dict[str, Any]]:
    """The ``data`` of every event written (of ``event_type``), in the order they were written."""
    from libs.db.models import Event

    with db.session() as session:
        query = select(Event).order_by(Event.id)
        if event_type is not None:
            query = query.where(Event.type == event_type)
        return [dict(e.data) for e in session.execute(query).scalars()]
