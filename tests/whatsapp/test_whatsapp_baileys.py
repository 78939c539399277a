"""Evolution API (Baileys bridge) webhooks: upsert, update, connection, unknown and list-shaped events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.errors import ParseError
from libs.whatsapp import (
    BaileysConnectionUpdate,
    BaileysMessageUpdate,
    BaileysMessageUpsert,
    BaileysOther,
    jid_phone,
    map_baileys_status,
    parse_baileys_event,
    parse_baileys_events,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """Return a decoded fixture."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_bytes())
    return data


def upsert_item(key_id: str, message: dict[str, Any], message_type: str | None = None) -> dict[str, Any]:
    """Build one ``messages.upsert`` data item from a contact."""
    item: dict[str, Any] = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": key_id},
        "pushName": "Maria",
        "status": "DELIVERY_ACK",
        "message": message,
        "messageTimestamp": 1717000000,
    }
    if message_type is not None:
        item["messageType"] = message_type
    return item


def upsert(item: dict[str, Any]) -> BaileysMessageUpsert:
    """Parse a single-item upsert envelope."""
    event = parse_baileys_event({"event": "messages.upsert", "instance": "x", "data": item})
    assert isinstance(event, BaileysMessageUpsert)
    return event


def test_messages_upsert_fixture() -> None:
    event = parse_baileys_event(json.dumps(fixture("evolution_messages_upsert.json")).encode())
    assert event == BaileysMessageUpsert(
        instance="sales-br",
        key_id="3EB0A1B2C3D4E5F6",
        remote_jid="5511999999999@s.whatsapp.net",
        from_me=False,
        phone="5511999999999",
        push_name="Maria",
        message_type="conversation",
        text="oi, tudo bem?",
        status="delivered",
        timestamp=1717000000,
    )
    assert isinstance(event, BaileysMessageUpsert) and event.raw["source"] == "android"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (
            {"extendedTextMessage": {"text": "with preview", "contextInfo": {"stanzaId": "Q1"}}},
            "with preview",
        ),
        ({"imageMessage": {"caption": "look", "mimetype": "image/jpeg"}}, "look"),
        ({"listResponseMessage": {"title": "Option B"}}, "Option B"),
        ({"buttonsResponseMessage": {"selectedDisplayText": "Yes"}}, "Yes"),
        ({"ephemeralMessage": {"message": {"conversation": "disappearing"}}}, "disappearing"),
        ({"audioMessage": {"seconds": 3}}, None),
        ({}, None),
    ],
)
def test_upsert_text_extraction(message: dict[str, Any], text: str | None) -> None:
    assert upsert(upsert_item("K1", message)).text == text


def test_upsert_without_message_type_guesses_it_and_reads_quote() -> None:
    event = upsert(upsert_item("K1", {"extendedTextMessage": {"text": "re", "contextInfo": {"stanzaId": "Q1"}}}))
    assert (event.message_type, event.quoted_id) == ("extendedTextMessage", "Q1")


def test_upsert_reaction_and_removal() -> None:
    added = upsert(upsert_item("R1", {"reactionMessage": {"key": {"id": "T1"}, "text": "\u2764"}}, "reactionMessage"))
    removed = upsert(upsert_item("R2", {"reactionMessage": {"key": {"id": "T1"}, "text": ""}}, "reactionMessage"))
    assert (added.text, added.reaction_to, added.reaction_removed) == ("\u2764", "T1", False)
    assert (removed.text, removed.reaction_to, removed.reaction_removed) == (None, "T1", True)


def test_upsert_group_message_has_no_phone_but_a_participant() -> None:
    item = upsert_item("G1", {"conversation": "hi all"})
    item["key"] = {
        "remoteJid": "120363040000000000@g.us",
        "fromMe": False,
        "id": "G1",
        "participant": "55119@lid",
    }
    event = upsert(item)
    assert (event.phone, event.participant) == (None, "55119@lid")


def test_upsert_long_timestamp_object() -> None:
    item = upsert_item("K1", {"conversation": "x"})
    item["messageTimestamp"] = {"low": 1717000000, "high": 0, "unsigned": True}
    assert upsert(item).timestamp == 1717000000


def test_messages_update_fixture() -> None:
    event = parse_baileys_event(fixture("evolution_messages_update.json"))
    assert event == BaileysMessageUpdate(
        instance="sales-br",
        key_id="3EB0A1B2C3D4E5F7",
        remote_jid="5511999999999@s.whatsapp.net",
        from_me=True,
        status="read",
        message_id="cm2abcdef0001",
    )


def test_messages_update_keyed_shape_and_missing_status() -> None:
    keyed = {"key": {"id": "K9", "remoteJid": "1@s.whatsapp.net", "fromMe": True}, "update": {"status": 3}}
    no_status = {"keyId": "K8", "remoteJid": "1@s.whatsapp.net", "fromMe": True, "pollUpdates": []}
    first, second = parse_baileys_events({"event": "messages.update", "instance": "x", "data": [keyed, no_status]})
    assert isinstance(first, BaileysMessageUpdate) and (first.key_id, first.status) == ("K9", "delivered")
    assert isinstance(second, BaileysMessageUpdate) and second.status is None


@pytest.mark.parametrize(
    ("raw", "mapped"),
    [
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "played"),
        ("ERROR", "failed"),
        ("PENDING", "pending"),
        ("DELETED", "deleted"),
        ("server_ack", "sent"),
        ("SOMETHING_NEW", "SOMETHING_NEW"),
        (4, "read"),
        (0, "failed"),
        (None, None),
        ("", None),
        (True, None),
    ],
)
def test_status_mapping(raw: object, mapped: str | None) -> None:
    assert map_baileys_status(raw) == mapped


def test_connection_update_fixture() -> None:
    event = parse_baileys_event(fixture("evolution_connection_update.json"))
    assert event == BaileysConnectionUpdate(
        instance="sales-br",
        state="close",
        status_reason=401,
        wuid="5511888888888@s.whatsapp.net",
        profile_name="Loja",
    )


@pytest.mark.parametrize("name", ["qrcode.updated", "QRCODE_UPDATED", "some.future.event"])
def test_unknown_events_never_fail(name: str) -> None:
    event = parse_baileys_event({"event": name, "instance": "x", "data": [1, "two", None]})
    assert isinstance(event, BaileysOther)
    assert (event.event, event.instance, event.raw) == (name.lower().replace("_", "."), "x", [1, "two", None])


def test_upper_snake_event_names_are_accepted() -> None:
    payload = fixture("evolution_messages_upsert.json") | {"event": "MESSAGES_UPSERT"}
    assert isinstance(parse_baileys_event(payload), BaileysMessageUpsert)
    payload = fixture("evolution_connection_update.json") | {"event": "CONNECTION_UPDATE"}
    assert isinstance(parse_baileys_event(payload), BaileysConnectionUpdate)


def test_list_shaped_upsert_data_yields_every_message() -> None:
    items = [upsert_item(f"K{i}", {"conversation": f"m{i}"}) for i in range(3)]
    events = parse_baileys_events({"event": "messages.upsert", "instance": "x", "data": items})
    assert [(e.key_id, e.text) for e in events if isinstance(e, BaileysMessageUpsert)] == [
        ("K0", "m0"),
        ("K1", "m1"),
        ("K2", "m2"),
    ]
    raw_baileys = {"messages": items, "type": "notify"}
    events = parse_baileys_events({"event": "messages.upsert", "instance": "x", "data": raw_baileys})
    assert len(events) == 3
    with pytest.raises(ParseError, match="exactly one"):
        parse_baileys_event({"event": "messages.upsert", "instance": "x", "data": items})


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"instance": "x", "data": {}}, "event"),
        ({"event": "messages.upsert", "data": {}}, "instance"),
        ({"event": "messages.upsert", "instance": "x"}, "data"),
        ({"event": "messages.upsert", "instance": "x", "data": [{"key": {}}]}, "data[0].key.id"),
        ({"event": "messages.upsert", "instance": "x", "data": [upsert_item("K", {}), "junk"]}, "data[1]"),
        (
            {"event": "messages.upsert", "instance": "x", "data": {"key": {"id": "K", "remoteJid": "j"}}},
            "data.key.fromMe",
        ),
        (
            {"event": "messages.update", "instance": "x", "data": {"remoteJid": "j", "fromMe": True}},
            "data.keyId",
        ),
        ({"event": "connection.update", "instance": "x", "data": {"statusReason": 1}}, "data.state"),
    ],
)
def test_malformed_known_events_fail_with_path(payload: dict[str, Any], path: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_baileys_events(payload)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("jid", "phone"),
    [
        ("5511999999999@s.whatsapp.net", "5511999999999"),
        ("5511999999999:12@s.whatsapp.net", "5511999999999"),
        ("5511999999999@c.us", "5511999999999"),
        ("120363040000000000@g.us", None),
        ("123456789@lid", None),
        ("status@broadcast", None),
        ("not-a-jid", None),
    ],
)
def test_jid_phone(jid: str, phone: str | None) -> None:
    assert jid_phone(jid) == phone
