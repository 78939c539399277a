"""Evolution API (Baileys bridge) events through POST /webhooks/baileys and the worker."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from libs.db.engine import Database
from libs.db.models import ConnectionStatus, Direction, Message, MessageStatus, WebhookStatus
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest


@pytest.fixture
def ids(db: Database) -> tuple[int, int]:
    """A company and its Baileys-bridge connection for instance ``sales-br``."""
    company_id = f.company(db)
    return company_id, f.baileys_connection(db, company_id)


def upsert(key_id: str, *, from_me: bool, text: str = "oi", **extra: Any) -> dict[str, Any]:
    """A ``messages.upsert`` envelope for a one-to-one chat."""
    data = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": from_me, "id": key_id},
        "pushName": "Maria",
        "status": "DELIVERY_ACK",
        "message": {"conversation": text},
        "messageType": "conversation",
        "messageTimestamp": 1717000000,
        **extra,
    }
    return f.evolution("messages.upsert", data)


def update(key_id: str, status: str, *, from_me: bool = True, when: str = "2025-10-21T11:41:02.000Z") -> dict:
    """A ``messages.update`` envelope (Evolution v2 flat shape)."""
    data = {"keyId": key_id, "remoteJid": "5511999999999@s.whatsapp.net", "fromMe": from_me, "status": status}
    return f.evolution("messages.update", data, when=when)


def connection_update(state: str, *, when: str, reason: int = 428) -> dict[str, Any]:
    """A ``connection.update`` envelope."""
    return f.evolution("connection.update", {"instance": f.INSTANCE, "state": state, "statusReason": reason}, when=when)


class TestMessagesUpsert:
    def test_inbound_message_is_stored_and_announced(
        self, ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
    ) -> None:
        company_id, connection_id = ids
        # When the bridge posts the documented messages.upsert example
        row = ingest.baileys(f.fixture("evolution_messages_upsert.json"))
        # Then the message is stored inbound with its contact
        assert (row.status, row.item_count, row.error) == (WebhookStatus.PROCESSED, 1, None)
        stored = f.message_by_external_id(db, "3EB0A1B2C3D4E5F6")
        [contact] = f.contacts(db)
        assert (contact.wa_id, contact.name) == ("5511999999999", "Maria")
        assert (stored.direction, stored.status, stored.body) == (
            Direction.INBOUND,
            MessageStatus.RECEIVED,
            "oi, tudo bem?",
        )
        assert (stored.company_id, stored.connection_id, stored.contact_id) == (company_id, connection_id, contact.id)
        assert stored.created_at == dt.datetime.fromtimestamp(1717000000, dt.UTC)
        # And it is announced once, as a message.received event
        [event] = f.events(db, "message.received")
        assert (event["message_id"], event["external_id"], event["contact"]) == (
            stored.id,
            "3EB0A1B2C3D4E5F6",
            {"wa_id": "5511999999999", "name": "Maria"},
        )

    def test_message_sent_from_the_phone_is_stored_as_outbound_sent(
        self, ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
    ) -> None:
        row = ingest.baileys(upsert("3EBFROMPHONE", from_me=True, text="sent from the phone"))
        assert row.status == WebhookStatus.PROCESSED
        stored = f.message_by_external_id(db, "3EBFROMPHONE")
        assert (stored.direction, stored.status, stored.body) == (
            Direction.OUTBOUND,
            MessageStatus.SENT,
            "sent from the phone",
        )
        assert stored.sent_at == dt.datetime.fromtimestamp(1717000000, dt.UTC)
        # Our own profile name is not taken as the contact's, and nothing is announced
        [contact] = f.contacts(db)
        assert contact.name is None
        assert f.events(db, "message.received") == []

    def test_same_key_in_two_bodies_is_stored_and_announced_once(
        self, ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
    ) -> None:
        ingest.baileys(upsert("3EBDUP", from_me=False))
        again = upsert("3EBDUP", from_me=False)
        again["date_time"] = "2025-10-21T11:45:00.000Z"  # a retry with another envelope: another body
        ingest.baileys(again)
        assert len(f.webhooks(db)) == 2
        assert f.count(db, Message) == 1
        assert len(f.events(db, "message.received")) == 1

    def test_group_message_is_skipped(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        group = upsert("3EBGROUP", from_me=False)
        group["data"]["key"]["remoteJid"] = "120363000000000000@g.us"
        row = ingest.baileys(group)
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        assert f.count(db, Message) == 0

    def test_message_without_message_type_and_a_long_content_key_is_stored(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        # Given an upsert with no messageType, whose content key (the type fallback) is 39 characters long
        envelope = upsert("3EBLONG", from_me=False)
        del envelope["data"]["messageType"]
        envelope["data"]["message"] = {"peerDataOperationRequestResponseMessage": {"stanzaId": "x"}}
        # When it is delivered
        row = ingest.baileys(envelope)
        # Then it is stored with the type clipped to the column instead of failing the webhook
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        assert f.message_by_external_id(db, "3EBLONG").type == "peerDataOperationRequestResponseMessage"[:32]


class TestMessagesUpdate:
    def test_documented_read_update_is_applied_to_our_message(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        message_id = f.outbound(db, *ids, external_id="3EB0A1B2C3D4E5F7", recipient="5511999999999")
        row = ingest.baileys(f.fixture("evolution_messages_update.json"))
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        message = f.message(db, message_id)
        assert message.status == MessageStatus.READ
        assert message.delivered_at is not None and message.read_at is not None

    def test_late_delivery_ack_after_read_is_ignored(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="3EBLATE")
        ingest.baileys(update("3EBLATE", "READ"))
        ingest.baileys(update("3EBLATE", "DELIVERY_ACK", when="2025-10-21T11:50:00.000Z"))
        assert f.message(db, message_id).status == MessageStatus.READ

    def test_error_status_fails_the_message(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        message_id = f.outbound(db, *ids, external_id="3EBERR")
        ingest.baileys(update("3EBERR", "ERROR"))
        assert f.message(db, message_id).status == MessageStatus.FAILED

    def test_update_for_unknown_key_is_kept_until_the_send_is_recorded(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        ingest.baileys(update("3EBEARLY", "SERVER_ACK"))
        assert [(p.external_id, p.status) for p in f.pending(db)] == [("3EBEARLY", "sent")]

    def test_status_of_an_inbound_message_is_skipped(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        row = ingest.baileys(update("3EBTHEIRS", "READ", from_me=False))
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        assert f.pending(db) == []


class TestConnectionUpdate:
    def test_close_deactivates_and_open_reactivates(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        _, connection_id = ids
        # When the documented close (logged out, 401) arrives
        row = ingest.baileys(f.fixture("evolution_connection_update.json"))
        # Then the connection is inactive, with the reason
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        closed = f.connection(db, connection_id)
        assert closed.status == ConnectionStatus.INACTIVE
        assert closed.status_reason == "bridge reported close (401)"
        # When the session opens again
        ingest.baileys(connection_update("open", when="2025-10-21T12:00:00.000Z"))
        # Then it is active again, the reason cleared
        opened = f.connection(db, connection_id)
        assert (opened.status, opened.status_reason) == (ConnectionStatus.ACTIVE, None)

    def test_open_does_not_override_needs_attention(self, ingest: Ingest, db: Database) -> None:
        company_id = f.company(db)
        connection_id = f.baileys_connection(db, company_id, status=ConnectionStatus.NEEDS_ATTENTION)
        ingest.baileys(connection_update("open", when="2025-10-21T12:00:00.000Z"))
        ingest.baileys(connection_update("close", when="2025-10-21T12:01:00.000Z"))
        assert f.connection(db, connection_id).status == ConnectionStatus.NEEDS_ATTENTION

    def test_connecting_changes_nothing(self, ingest: Ingest, db: Database, ids: tuple[int, int]) -> None:
        row = ingest.baileys(connection_update("connecting", when="2025-10-21T12:00:00.000Z"))
        assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
        assert f.connection(db, ids[1]).status == ConnectionStatus.ACTIVE


class TestOtherEvents:
    def test_unknown_event_is_processed_without_failing(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        row = ingest.baileys(f.evolution("qrcode.updated", {"qrcode": {"base64": "data:image/png;base64,AAAA"}}))
        assert (row.status, row.item_count, row.error) == (WebhookStatus.PROCESSED, 1, None)

    def test_message_for_an_unknown_instance_is_kept_and_noted(
        self, ingest: Ingest, db: Database, ids: tuple[int, int]
    ) -> None:
        envelope = upsert("3EBNOWHERE", from_me=False)
        envelope["instance"] = "nobody"
        row = ingest.baileys(envelope)
        # kept until the instance gets a connection (tests/ingest/test_unmatched.py)
        assert (row.status, row.item_count, row.unmatched) == (WebhookStatus.UNMATCHED, 1, ["nobody"])
        assert row.error == "no connection for bridge instance nobody: its messages are kept until one is created"
        assert f.count(db, Message) == 0
