"""Meta inbound webhooks through edge → Postgres → Redis → worker: contacts, messages, events, batching."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus, WebhookStatus
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

DOC_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRB"


@pytest.fixture
def meta_ids(db: Database) -> tuple[int, int]:
    """A company and its Meta connection for Meta's documented phone_number_id."""
    company_id = f.company(db)
    return company_id, f.meta_connection(db, company_id)


def test_documented_text_is_stored_contact_upserted_and_announced(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, meta_ids: tuple[int, int]
) -> None:
    # Given Meta's documented incoming-text example, byte for byte
    company_id, connection_id = meta_ids
    # When it is delivered through the edge and the worker
    row = ingest.meta(f.fixture("meta_incoming_text.json"))
    # Then the contact is upserted with its profile name
    [contact] = f.contacts(db)
    assert (contact.company_id, contact.wa_id, contact.name) == (company_id, "16505551234", "Ana")
    # And the message is stored inbound, received, with Meta's timestamp
    [stored] = f.messages(db)
    assert stored.direction == Direction.INBOUND
    assert stored.status == MessageStatus.RECEIVED
    assert (stored.body, stored.type, stored.external_id) == ("hello", "text", DOC_WAMID)
    assert (stored.company_id, stored.connection_id, stored.contact_id) == (company_id, connection_id, contact.id)
    assert stored.recipient == "16505551234"
    assert stored.created_at == dt.datetime.fromtimestamp(1749416383, dt.UTC)
    # And the webhook row is processed with its item count
    assert row.status == WebhookStatus.PROCESSED
    assert (row.item_count, row.error) == (1, None)
    assert row.processed_at is not None
    # And exactly one message.received event is written with it
    [event] = f.events(db)
    assert event == {
        "message_id": stored.id,
        "company_id": company_id,
        "connection_id": connection_id,
        "external_id": DOC_WAMID,
        "contact": {"wa_id": "16505551234", "name": "Ana"},
        "type": "text",
        "text": "hello",
        "media": None,
        "context": None,
        "reply_id": None,
        "reaction": None,
        "content": None,
        "errors": None,
        "timestamp": "2025-06-08T20:59:43Z",
    }


def test_contact_name_is_updated_not_duplicated(ingest: Ingest, db: Database, meta_ids: tuple[int, int]) -> None:
    # Given a contact first seen as "Ana"
    ingest.meta(f.fixture("meta_incoming_text.json"))
    # When the same wa_id writes again under a new profile name
    renamed = f.meta_change(
        contacts=[{"profile": {"name": "Ana Maria"}, "wa_id": f.CUSTOMER}],
        messages=[f.meta_message("wamid.SECOND", "text", {"body": "again"})],
    )
    ingest.meta(f.meta_payload(renamed))
    # Then there is still one contact, renamed, and both messages point at it
    [contact] = f.contacts(db)
    assert contact.name == "Ana Maria"
    assert {m.contact_id for m in f.messages(db)} == {contact.id}


TYPES: list[tuple[str, dict[str, Any], str | None, dict[str, Any]]] = [
    ("text", f.meta_message("wamid.T", "text", {"body": "hello"}), "hello", {}),
    (
        "image",
        f.meta_message(
            "wamid.I",
            "image",
            {"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "abc", "caption": "look"},
        ),
        "look",
        {"media_id": "1479537139650973", "mime_type": "image/jpeg"},
    ),
    (
        "button_reply",
        f.meta_message(
            "wamid.BR", "interactive", {"type": "button_reply", "button_reply": {"id": "yes-1", "title": "Yes"}}
        ),
        "Yes",
        {"reply_id": "yes-1"},
    ),
    (
        "list_reply",
        f.meta_message(
            "wamid.LR",
            "interactive",
            {"type": "list_reply", "list_reply": {"id": "row-2", "title": "Blue", "description": "navy"}},
        ),
        "Blue",
        {"reply_id": "row-2"},
    ),
    (
        "button",
        f.meta_message(
            "wamid.BT",
            "button",
            {"payload": "STOP", "text": "Stop promotions"},
            context={"from": "15550783881", "id": "wamid.TEMPLATE"},
        ),
        "Stop promotions",
        {"reply_id": "STOP", "context_wamid": "wamid.TEMPLATE"},
    ),
    (
        "reaction",
        f.meta_message("wamid.RX", "reaction", {"message_id": "wamid.OURS", "emoji": "\U0001f44d"}),
        "\U0001f44d",
        {"reaction_to": "wamid.OURS", "reaction_removed": False},
    ),
    (
        "reaction_removed",
        f.meta_message("wamid.RR", "reaction", {"message_id": "wamid.OURS"}),
        None,
        {"reaction_to": "wamid.OURS", "reaction_removed": True},
    ),
    (
        "unsupported",
        f.meta_message(
            "wamid.UN",
            "unsupported",
            errors=[{"code": 131051, "title": "Message type unknown", "message": "Message type unknown"}],
        ),
        None,
        {},
    ),
    ("unknown", f.meta_message("wamid.UK", "hologram", {"shape": "cube"}), None, {}),
]


@pytest.mark.parametrize(("label", "item", "body", "extras"), TYPES, ids=[t[0] for t in TYPES])
def test_each_message_type_is_stored(
    ingest: Ingest,
    db: Database,
    meta_ids: tuple[int, int],
    label: str,
    item: dict[str, Any],
    body: str | None,
    extras: dict[str, Any],
) -> None:
    # Given one inbound message of this type
    payload = f.meta_payload(f.meta_change(messages=[item]))
    # When it is delivered
    row = ingest.meta(payload)
    # Then it is stored once, with its content normalised and the raw item kept
    assert (row.status, row.item_count, row.error) == (WebhookStatus.PROCESSED, 1, None)
    stored = f.message_by_external_id(db, item["id"])
    assert stored.type == item["type"]
    assert stored.body == body
    assert {k: stored.payload[k] for k in extras} == extras
    assert stored.payload["raw"] == item


def test_batched_payload_applies_every_item(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, meta_ids: tuple[int, int]
) -> None:
    # Given a second number of the same company and outbound messages awaiting statuses
    company_id, connection_id = meta_ids
    other_id = f.meta_connection(db, company_id, number_id="200000000000002")
    # (each sent from the number whose change reports its status)
    ours = {w: f.outbound(db, company_id, connection_id, external_id=w) for w in ("wamid.O1", "wamid.O2")}
    ours["wamid.O3"] = f.outbound(db, company_id, other_id, external_id="wamid.O3")
    # And one POST with 2 entries × 2 changes mixing messages, statuses, a system error and another field
    contact = [{"profile": {"name": "Bia"}, "wa_id": "5511900000001"}]
    first = {
        "id": f.WABA,
        "changes": [
            f.meta_change(
                contacts=contact,
                messages=[
                    f.meta_message("wamid.A1", "text", {"body": "one"}, sender="5511900000001"),
                    f.meta_message("wamid.A2", "text", {"body": "two"}, sender="5511900000001"),
                ],
                statuses=[f.meta_status("wamid.O1", "delivered"), f.meta_status("wamid.O2", "read")],
            ),
            f.meta_change(
                number_id="200000000000002",
                messages=[f.meta_message("wamid.B1", "text", {"body": "three"})],
                statuses=[f.failed_status("wamid.O3")],
            ),
        ],
    }
    second = {
        "id": "999999999999999",
        "changes": [
            f.meta_change(
                messages=[
                    f.meta_message("wamid.C1", "image", {"id": "m1", "mime_type": "image/png"}),
                    f.meta_message("wamid.C2", "reaction", {"message_id": "wamid.A1", "emoji": "x"}),
                ],
                statuses=[f.meta_status("wamid.EARLY", "sent")],
                errors=[{"code": 131000, "title": "Something went wrong", "message": "Something went wrong"}],
            ),
            {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
        ],
    }
    payload = {"object": "whatsapp_business_account", "entry": [first, second]}
    # When it is delivered
    row = ingest.meta(payload)
    # Then every inbound message is stored, on the connection of its own number
    stored = {m.external_id: m for m in f.messages(db) if m.direction == Direction.INBOUND}
    assert set(stored) == {"wamid.A1", "wamid.A2", "wamid.B1", "wamid.C1", "wamid.C2"}
    assert stored["wamid.B1"].connection_id == other_id
    assert {stored[w].connection_id for w in ("wamid.A1", "wamid.A2", "wamid.C1", "wamid.C2")} == {connection_id}
    # And every status is applied (the unknown one kept for later)
    assert f.message(db, ours["wamid.O1"]).status == MessageStatus.DELIVERED
    assert f.message(db, ours["wamid.O2"]).status == MessageStatus.READ
    assert f.message(db, ours["wamid.O3"]).status == MessageStatus.FAILED
    assert [(p.external_id, p.status) for p in f.pending(db)] == [("wamid.EARLY", "sent")]
    # And the row is processed: 5 messages + 4 statuses + 1 system error, the error and ignored field noted
    assert row.status == WebhookStatus.PROCESSED
    assert row.item_count == 10
    assert row.error is not None
    assert "system error 131000: Something went wrong" in row.error
    assert "1 change(s) of fields other than messages ignored" in row.error
    # And each new inbound message is announced once
    events = f.events(db, "message.received")
    assert sorted(e["external_id"] for e in events) == sorted(w for w in stored if w)


def test_unknown_phone_number_id_is_kept_and_noted(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, meta_ids: tuple[int, int]
) -> None:
    # Given a message to a number no connection owns
    payload = f.meta_payload(
        f.meta_change(number_id="555000111", messages=[f.meta_message("wamid.NOBODY", "text", {"body": "hi"})])
    )
    # When it is delivered
    row = ingest.meta(payload)
    # Then the row is kept for that number (tests/ingest/test_unmatched.py), noted; nothing stored or announced
    assert (row.status, row.item_count, row.unmatched) == (WebhookStatus.UNMATCHED, 1, ["555000111"])
    assert row.error == "no connection for phone_number_id 555000111: its messages are kept until one is created"
    assert f.count(db, Message) == 0
    assert f.contacts(db) == []
    assert f.events(db) == []


def test_overlong_unknown_type_is_clipped_and_does_not_sink_the_batch(
    ingest: Ingest, db: Database, meta_ids: tuple[int, int]
) -> None:
    # Given a batch where one message has a type name wider than the column, next to a normal one
    odd = f.meta_message("wamid.ODD", "x" * 40, {"a": 1})
    payload = f.meta_payload(f.meta_change(messages=[odd, f.meta_message("wamid.FINE", "text", {"body": "ok"})]))
    # When it is delivered
    row = ingest.meta(payload)
    # Then both are stored (the type clipped, the raw item intact) and the row is processed
    assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 2)
    stored = f.message_by_external_id(db, "wamid.ODD")
    assert (stored.type, stored.payload["raw"]) == ("x" * 32, odd)
    assert f.message_by_external_id(db, "wamid.FINE").body == "ok"


@pytest.mark.parametrize(
    "text",
    [
        'say "hi" \\ back\\slash',  # quotes and backslashes: escaped in an array literal, not in the binary format
        "NULL",  # an unquoted NULL in an array literal is a null, not the word
        "{braces}, commas, and\nnew lines\ttabs",
        "  leading and trailing blanks  ",
        "olá, 你好, \U0001f44d",
    ],
)
def test_a_text_arrives_byte_for_byte_whatever_it_holds(
    ingest: Ingest, db: Database, meta_ids: tuple[int, int], text: str
) -> None:
    # Given a customer's text that an array parameter would have to quote or escape
    change = f.meta_change(messages=[f.meta_message("wamid.ODD", "text", {"body": text})])
    # When it is delivered through the edge and the worker (its row written with the group's others)
    row = ingest.meta(f.meta_payload(change))
    # Then the message, its stored payload and its event hold exactly that text
    assert row.status == WebhookStatus.PROCESSED
    [stored] = f.messages(db)
    assert stored.body == text and stored.payload is not None and stored.payload["raw"]["text"]["body"] == text
    [event] = f.events(db)
    assert event["text"] == text
