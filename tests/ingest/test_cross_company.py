"""One zapq company messaging another: the same WhatsApp id is the sender's outbound row and the receiver's
inbound row, each scoped to its own connection; a status touches only the connection it arrived on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus, WebhookStatus
from libs.messages.status_store import record_sent_async
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

#: Company A's and company B's Meta numbers (phone_number_id) and B's display number.
NUMBER_A = "111000111000111"
NUMBER_B = "222000222000222"
PHONE_A = "15550001111"
PHONE_B = "15550002222"
WAMID = "wamid.HBgLA2B"
T0 = 1_750_030_000


def record_sent(settings: Settings, message_id: int, wamid: str) -> None:
    """The sender's own record of an accepted send, through its asyncio pool."""

    async def run() -> None:
        pool = AsyncConnectionPool(settings.libpq_url, min_size=1, max_size=1, open=False, kwargs={"autocommit": True})
        async with pool:
            await record_sent_async(pool, message_id, wamid)

    asyncio.run(run())


def rows_with(db: Database, external_id: str) -> list[Message]:
    """Every message stored under ``external_id``, by id."""
    with db.session() as session:
        query = select(Message).where(Message.external_id == external_id).order_by(Message.id)
        return list(session.execute(query).scalars())


def inbound_to_b(*, name: str = "A") -> dict[str, Any]:
    """B's webhook: A's number wrote to B's number (with A's profile ``name``)."""
    message = f.meta_message(WAMID, "text", {"body": "hello from A"}, sender=PHONE_A)
    contact = {"profile": {"name": name}, "wa_id": PHONE_A}
    return f.meta_payload(f.meta_change(NUMBER_B, messages=[message], contacts=[contact]))


def status_on(number_id: str, status: str, *, timestamp: int = T0) -> dict[str, Any]:
    """A status webhook for ``WAMID`` arriving on ``number_id``."""
    return f.meta_payload(f.meta_change(number_id, statuses=[f.meta_status(WAMID, status, timestamp=timestamp)]))


@pytest.fixture
def companies(db: Database) -> dict[str, tuple[int, int]]:
    """Company A and company B, each with its own Meta number."""
    a, b = f.company(db, "A"), f.company(db, "B")
    return {
        "A": (a, f.meta_connection(db, a, number_id=NUMBER_A)),
        "B": (b, f.meta_connection(db, b, number_id=NUMBER_B)),
    }


def test_a_message_between_two_companies_is_stored_on_both_sides(
    ingest: Ingest, db: Database, companies: dict[str, tuple[int, int]]
) -> None:
    # Given company A's message to company B's number, sent and recorded under Meta's wamid
    a_company, a_connection = companies["A"]
    b_company, b_connection = companies["B"]
    outbound = f.outbound(db, a_company, a_connection, external_id=WAMID, recipient=PHONE_B)
    # When B's number receives it (the same wamid)
    row = ingest.meta(inbound_to_b())
    # Then B's inbound copy is stored next to A's outbound row, and announced to B
    assert (row.status, row.item_count, row.error) == (WebhookStatus.PROCESSED, 1, None)
    sender, receiver = rows_with(db, WAMID)
    assert (sender.id, sender.company_id, sender.direction) == (outbound, a_company, Direction.OUTBOUND)
    assert (receiver.company_id, receiver.connection_id, receiver.direction, receiver.status) == (
        b_company,
        b_connection,
        Direction.INBOUND,
        MessageStatus.RECEIVED,
    )
    [received] = f.events(db, "message.received")
    assert (received["company_id"], received["message_id"]) == (b_company, receiver.id)
    # When the same message is delivered again (another body: the profile name changed), then nothing more is stored
    again = ingest.meta(inbound_to_b(name="A Ltd"))
    assert (again.id != row.id, again.status) == (True, WebhookStatus.PROCESSED)
    assert len(rows_with(db, WAMID)) == 2

    # When a status arrives on A's number
    ingest.meta(status_on(NUMBER_A, "delivered"))
    # Then A's row moves, B's inbound copy does not
    sender, receiver = rows_with(db, WAMID)
    assert (sender.status, receiver.status) == (MessageStatus.DELIVERED, MessageStatus.RECEIVED)

    # When a status for the same wamid arrives on B's number
    ingest.meta(status_on(NUMBER_B, "read", timestamp=T0 + 5))
    # Then it touches nothing of A's: the status belongs to B's number, which sent no such message
    sender, receiver = rows_with(db, WAMID)
    assert (sender.status, sender.read_at, receiver.status) == (
        MessageStatus.DELIVERED,
        None,
        MessageStatus.RECEIVED,
    )
    assert [e["message_id"] for e in f.events(db, "message.status")] == [sender.id]


def test_the_receivers_copy_arriving_before_the_senders_record_conflicts_with_nothing(
    ingest: Ingest, db: Database, settings: Settings, companies: dict[str, tuple[int, int]]
) -> None:
    # Given A's message accepted by Meta but not recorded yet (no wamid on A's row)
    a_company, a_connection = companies["A"]
    outbound = f.outbound(db, a_company, a_connection, status=MessageStatus.SENDING, recipient=PHONE_B)
    # And B's inbound copy and a 'read' status on B's number arriving first
    ingest.meta(inbound_to_b())
    ingest.meta(status_on(NUMBER_B, "read", timestamp=T0 + 5))
    # And a 'delivered' status on A's number, kept until A's send is known
    ingest.meta(status_on(NUMBER_A, "delivered", timestamp=T0 + 1))
    # When A's sender records the accepted send
    record_sent(settings, outbound, WAMID)
    # Then A's row has the wamid and only the status of A's own number
    sender, receiver = rows_with(db, WAMID)
    assert (sender.id, sender.status, sender.read_at) == (outbound, MessageStatus.DELIVERED, None)
    assert (receiver.direction, receiver.status) == (Direction.INBOUND, MessageStatus.RECEIVED)


def test_baileys_instances_of_two_companies(
    ingest: Ingest, db: Database, companies: dict[str, tuple[int, int]]
) -> None:
    # Given company A and company B each on a Baileys-bridge instance, A's message to B recorded
    a_company, _ = companies["A"]
    b_company, _ = companies["B"]
    a_bridge = f.baileys_connection(db, a_company, instance="inst-a")
    b_bridge = f.baileys_connection(db, b_company, instance="inst-b")
    outbound = f.outbound(db, a_company, a_bridge, external_id="3EB0CROSS", recipient=PHONE_B)

    def upsert(instance: str, *, from_me: bool, jid: str) -> dict[str, Any]:
        key = {"remoteJid": f"{jid}@s.whatsapp.net", "fromMe": from_me, "id": "3EB0CROSS"}
        data = {"key": key, "message": {"conversation": "oi"}, "messageType": "conversation", "messageTimestamp": T0}
        return f.evolution("messages.upsert", data, instance=instance)

    # When A's bridge echoes A's own send and B's bridge receives it
    ingest.baileys(upsert("inst-a", from_me=True, jid=PHONE_B))
    ingest.baileys(upsert("inst-b", from_me=False, jid=PHONE_A))
    # Then A keeps one outbound row and B has its inbound copy
    sender, receiver = rows_with(db, "3EB0CROSS")
    assert (sender.id, receiver.connection_id, receiver.direction) == (outbound, b_bridge, Direction.INBOUND)
    # When B's bridge reports the message read (B read it) as a status of its own
    update = {"keyId": "3EB0CROSS", "remoteJid": f"{PHONE_A}@s.whatsapp.net", "fromMe": True, "status": "READ"}
    ingest.baileys(f.evolution("messages.update", update, instance="inst-b"))
    # Then A's row is untouched; A's own bridge's status moves it
    assert rows_with(db, "3EB0CROSS")[0].status == MessageStatus.SENT
    update["status"] = "DELIVERY_ACK"
    ingest.baileys(f.evolution("messages.update", update, instance="inst-a"))
    assert [r.status for r in rows_with(db, "3EB0CROSS")] == [MessageStatus.DELIVERED, MessageStatus.RECEIVED]
