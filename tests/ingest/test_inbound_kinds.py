"""Every inbound kind, Meta and Evolution, through the edge and the worker: stored with its structured
payload on the message row and in the ``message.received`` event (which validates against the published
schema); odd shapes never drop the batch or crash the parser."""

from __future__ import annotations

from typing import Any

import pytest

from libs.db.engine import Database
from libs.events.types import MessageReceivedData
from tests.fakes import evolution_kinds as evo
from tests.fakes import meta_kinds as mk
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

SENDER = f.CUSTOMER
ONE_DAY = {"description": "1 day"}


@pytest.fixture
def meta_ids(db: Database) -> tuple[int, int]:
    company_id = f.company(db)
    return company_id, f.meta_connection(db, company_id)


@pytest.fixture
def bridge_ids(db: Database) -> tuple[int, int]:
    company_id = f.company(db)
    return company_id, f.baileys_connection(db, company_id, instance="main")


def _batch(*items: dict[str, Any]) -> dict[str, Any]:
    """One webhook carrying every item (Meta batches)."""
    body = mk.inbound_webhook(items[0])
    body["entry"][0]["changes"][0]["value"]["messages"] = list(items)
    return body


def _received(db: Database) -> dict[str, dict[str, Any]]:
    """The message.received events by external id, each validated against the published schema."""
    events = f.events(db, "message.received")
    for event in events:
        MessageReceivedData.model_validate(event)
    return {event["external_id"]: event for event in events}


#: Meta kind → (expected row type, expected structured content).
META_EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "image": ("image", {"kind": "image", "id": "1013859600285441", "mime_type": "image/jpeg", "sha256": "c2hhMjU2",
                        "caption": "look"}),
    "video": ("video", {"kind": "video", "id": "501", "mime_type": "video/mp4", "sha256": "dmlk", "caption": "clip"}),
    "audio": ("audio", {"kind": "audio", "id": "2013859600285442", "mime_type": "audio/ogg; codecs=opus",
                        "sha256": "YXVkaW8=", "voice": True}),
    "document": ("document", {"kind": "document", "id": "301", "mime_type": "application/pdf", "sha256": "ZG9j",
                              "caption": "invoice", "filename": "inv.pdf"}),
    "sticker": ("sticker", {"kind": "sticker", "id": "401", "mime_type": "image/webp", "sha256": "c3RpY2s=",
                            "animated": False}),
    "location": ("location", {"kind": "location", "latitude": 37.758056, "longitude": -122.425332, "name": "HQ",
                              "address": "1 Hacker Way"}),
    "contacts": ("contacts", {"kind": "contacts", "contacts": [
        {"name": {"formatted_name": "John Smith", "first_name": "John"},
         "phones": [{"phone": "+1 650 555 1234", "type": "WORK", "wa_id": "16505551234"}]}]}),
    "unsupported": ("unsupported", {"kind": "unsupported"}),
}  # fmt: skip


def test_every_meta_kind_is_stored_with_its_payload_and_announced(
    ingest: Ingest, db: Database, meta_ids: tuple[int, int]
) -> None:
    # Given one webhook batching every inbound kind Meta documents
    items = [builder(f"wamid.{kind}", SENDER) for kind, builder in mk.SIMPLE_BUILDERS.items()]
    items += [
        mk.button_reply_message("wamid.button_reply", SENDER, "wamid.OURS1"),
        mk.list_reply_message("wamid.list_reply", SENDER, "wamid.OURS2"),
        mk.template_button_message("wamid.template_button", SENDER, "wamid.TEMPLATE"),
        mk.reaction_message("wamid.reaction", SENDER, "wamid.OURS3"),
        mk.reaction_message("wamid.unreaction", SENDER, "wamid.OURS3", emoji=None),
        mk.forwarded_text_message("wamid.forwarded", SENDER),
        mk.forwarded_text_message("wamid.viral", SENDER, frequently=True),
    ]
    # When it goes through the edge and the worker
    ingest.meta(_batch(*items))
    # Then every message is stored, none dropped
    rows = {row.external_id: row for row in f.messages(db)}
    assert len(rows) == len(items)
    events = _received(db)
    # And each media / location / contacts / unsupported row carries its structured content, as its event does
    for kind, (row_type, content) in META_EXPECTED.items():
        row = rows[f"wamid.{kind}"]
        assert row.type == row_type
        assert row.payload["content"] == content, kind
        assert events[f"wamid.{kind}"]["content"] == content
    # And an unsupported message keeps Meta's errors
    assert rows["wamid.unsupported"].payload["errors"] == [
        {"code": 131051, "title": "Message type unknown", "details": "Message type is currently not supported."}
    ]
    assert events["wamid.unsupported"]["errors"][0]["code"] == 131051
    # And replies name what they reply to: button, list row, template quick reply
    button, listed = events["wamid.button_reply"], events["wamid.list_reply"]
    assert button["content"] == {"kind": "button_reply", "id": "yes", "title": "Yes"}
    assert (button["reply_id"], button["context"]["message_id"]) == ("yes", "wamid.OURS1")
    assert listed["content"] == {
        "kind": "list_reply",
        "id": "priority_express",
        "title": "Express",
        "description": "1 day",
    }
    template = events["wamid.template_button"]
    assert template["content"] == {"kind": "button", "payload": "STOP_PROMO", "text": "Stop promotions"}
    assert template["context"] == {"message_id": "wamid.TEMPLATE", "from": "15550783881", "forwarded": False,
                                   "frequently_forwarded": False}  # fmt: skip
    # And reactions and their removal
    assert events["wamid.reaction"]["content"] == {"kind": "reaction", "message_id": "wamid.OURS3", "emoji": "👍"}
    assert events["wamid.unreaction"]["reaction"] == {"message_id": "wamid.OURS3", "emoji": None, "removed": True}
    # And forwarded flags
    assert events["wamid.forwarded"]["context"] == {"forwarded": True, "frequently_forwarded": False}
    assert events["wamid.viral"]["context"] == {"forwarded": True, "frequently_forwarded": True}
    assert rows["wamid.viral"].payload["context"]["frequently_forwarded"] is True


def test_odd_shapes_are_stored_not_dropped(ingest: Ingest, db: Database, meta_ids: tuple[int, int]) -> None:
    # Given kinds whose objects are of the wrong JSON type or missing
    odd = [
        {"from": SENDER, "id": "wamid.o1", "timestamp": "1749416383", "type": "location", "location": "here"},
        {"from": SENDER, "id": "wamid.o2", "timestamp": "1749416383", "type": "contacts", "contacts": {"x": 1}},
        {"from": SENDER, "id": "wamid.o3", "timestamp": "1749416383", "type": "interactive", "interactive": []},
        {"from": SENDER, "id": "wamid.o4", "timestamp": "1749416383", "type": "image", "image": {"id": 5},
         "context": "not an object", "errors": "nope"},
        {"from": SENDER, "id": "wamid.o5", "timestamp": "1749416383", "type": "order", "order": {"catalog_id": "1"}},
    ]  # fmt: skip
    ingest.meta(_batch(*odd))
    # Then each is stored with what could be read
    rows = {row.external_id: row for row in f.messages(db)}
    assert rows["wamid.o1"].payload["content"] == {"kind": "location"}
    assert rows["wamid.o2"].payload["content"] == {"kind": "contacts", "contacts": []}
    assert rows["wamid.o3"].payload["content"] == {"kind": "interactive"}
    assert rows["wamid.o4"].payload["content"] == {"kind": "image"}
    assert rows["wamid.o5"].payload["content"] == {"kind": "order"}
    assert len(_received(db)) == 5


#: Evolution kind → expected structured content.
EVOLUTION_EXPECTED: dict[str, dict[str, Any]] = {
    "image": {"kind": "image", "url": "https://mmg.whatsapp.net/x", "mime_type": "image/jpeg", "caption": "look",
              "sha256": "c2hh", "size": 1234},
    "video": {"kind": "video", "mime_type": "video/mp4", "caption": "clip", "seconds": 3},
    "audio": {"kind": "audio", "mime_type": "audio/ogg; codecs=opus", "voice": True, "seconds": 4},
    "document": {"kind": "document", "mime_type": "application/pdf", "filename": "inv.pdf", "caption": "invoice"},
    "sticker": {"kind": "sticker", "mime_type": "image/webp", "animated": False},
    "location": {"kind": "location", "latitude": -23.55, "longitude": -46.63, "name": "Sé", "address": "Praça da Sé"},
    "contacts": {"kind": "contacts", "contacts": [{"name": {"formatted_name": "John Smith"},
                 "phones": [{"phone": "+1 650 555 1234", "wa_id": "16505551234"}],
                 "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:John Smith\nTEL;type=CELL;waid=16505551234:+1 650 555 1234\n"
                          "END:VCARD"}]},
    "button_reply": {"kind": "button_reply", "id": "yes", "title": "Yes"},
    "list_reply": {"kind": "list_reply", "id": "priority_express", "title": "Express", "description": "1 day"},
    "template_button": {"kind": "button", "payload": "STOP", "text": "Stop"},
}  # fmt: skip


def test_every_evolution_kind_is_stored_with_its_payload_and_announced(
    ingest: Ingest, db: Database, bridge_ids: tuple[int, int]
) -> None:
    # Given one messages.upsert per kind from the bridge, the image a reply to one of ours and forwarded
    for kind, (message, message_type) in evo.BAILEYS_MESSAGES.items():
        context = {"stanzaId": "3EB0OURS", "participant": "5511888888888@s.whatsapp.net", "isForwarded": True,
                   "forwardingScore": 1} if kind == "image" else None  # fmt: skip
        ingest.baileys(evo.upsert(message, message_type, key_id=f"KEY-{kind}", number="5511999999999", context=context))
    # Then every one is stored with its structured content, and announced with it
    rows = {row.external_id: row for row in f.messages(db)}
    events = _received(db)
    for kind, content in EVOLUTION_EXPECTED.items():
        assert rows[f"KEY-{kind}"].payload["content"] == content, kind
        assert events[f"KEY-{kind}"]["content"] == content, kind
    # And a reply or a choice names its id; the reply its original and the forwarded flag
    assert events["KEY-button_reply"]["reply_id"] == "yes"
    assert events["KEY-template_button"]["reply_id"] == "STOP"
    assert events["KEY-image"]["context"] == {"message_id": "3EB0OURS", "from": "5511888888888@s.whatsapp.net",
                                              "forwarded": True, "frequently_forwarded": False}  # fmt: skip
