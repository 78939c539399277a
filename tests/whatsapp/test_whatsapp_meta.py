"""Meta Cloud API webhook parsing: documented examples, batching, every message type, statuses."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from libs.whatsapp import (
    ContactInfo,
    InboundMessage,
    MetaBatch,
    StatusUpdate,
    meta_dedup_key,
    parse_meta_webhook,
)
from tests.whatsapp.meta_builders import (
    DISPLAY,
    NUMBER_ID,
    WABA,
    change,
    entry,
    envelope,
    fixture_bytes,
    message,
    status,
)


def only_inbound(msg: dict[str, Any]) -> InboundMessage:
    """Parse a single-message payload and return its one inbound message."""
    batch = parse_meta_webhook(envelope(entry(change(messages=[msg]))))
    assert len(batch.inbound) == 1
    return batch.inbound[0]


# --- Meta's documented examples -------------------------------------------------------------------


def test_documented_incoming_text_is_parsed_from_raw_bytes() -> None:
    # Given Meta's documented incoming-text webhook as raw bytes
    body = fixture_bytes("meta_incoming_text.json")
    # When it is parsed
    batch = parse_meta_webhook(body)
    # Then one inbound message carries every normalised field
    assert batch.statuses == () and batch.system_errors == () and batch.skipped_changes == 0
    assert batch.inbound == (
        InboundMessage(
            waba_id=WABA,
            phone_number_id=NUMBER_ID,
            display_phone_number=DISPLAY,
            wamid="wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRB",
            from_wa_id="16505551234",
            timestamp=1749416383,
            type="text",
            text="hello",
            contact_name="Ana",
        ),
    )
    assert batch.inbound[0].raw["text"] == {"body": "hello"}
    assert batch.contacts == (ContactInfo(waba_id=WABA, phone_number_id=NUMBER_ID, wa_id="16505551234", name="Ana"),)


def test_documented_delivered_status_carries_pricing() -> None:
    batch = parse_meta_webhook(fixture_bytes("meta_status_delivered.json"))
    assert batch.inbound == ()
    assert batch.statuses == (
        StatusUpdate(
            waba_id=WABA,
            phone_number_id=NUMBER_ID,
            wamid="wamid.HBgLOUTBOUND1",
            status="delivered",
            timestamp=1750030080,
            recipient_id="16505551234",
            pricing_category="service",
            pricing_model="PMP",
            billable=False,
        ),
    )


def test_documented_read_status() -> None:
    (update,) = parse_meta_webhook(fixture_bytes("meta_status_read.json")).statuses
    assert (update.wamid, update.status, update.timestamp) == ("wamid.HBgLOUTBOUND1", "read", 1750030090)
    assert update.billable is None and update.pricing_category is None and update.error_code is None


def test_documented_failed_status_exposes_first_error() -> None:
    (update,) = parse_meta_webhook(fixture_bytes("meta_status_failed.json")).statuses
    assert update.status == "failed"
    assert update.error_code == 131049
    assert update.error_title == "This message was not delivered to maintain healthy ecosystem engagement."
    assert update.error_details is not None and update.error_details.startswith("In order to maintain")


def test_bytes_and_dict_inputs_give_the_same_batch() -> None:
    body = fixture_bytes("meta_incoming_text.json")
    assert parse_meta_webhook(body) == parse_meta_webhook(json.loads(body))


def test_dedup_key_is_sha256_of_raw_body() -> None:
    body = fixture_bytes("meta_status_failed.json")
    assert meta_dedup_key(body) == hashlib.sha256(body).hexdigest()
    assert meta_dedup_key(body) != meta_dedup_key(body + b" ")


# --- batching -------------------------------------------------------------------------------------


def test_every_entry_change_message_and_status_of_a_batch_is_parsed() -> None:
    # Given 2 entries x 2 changes, each change with 3 messages, 2 statuses and a contact
    entries = []
    for e in range(2):
        changes = []
        for c in range(2):
            tag = f"{e}{c}"
            changes.append(
                change(
                    number_id=f"PN{tag}",
                    contacts=[{"profile": {"name": f"User {tag}"}, "wa_id": "16505551234"}],
                    messages=[message(f"wamid.in.{tag}.{m}", "text", {"body": f"m{m}"}) for m in range(3)],
                    statuses=[status(f"wamid.out.{tag}.{s}", "delivered") for s in range(2)],
                )
            )
        entries.append(entry(*changes, waba=f"WABA{e}"))
    # When the batch is parsed
    batch = parse_meta_webhook(orjson.dumps(envelope(*entries)))
    # Then nothing is dropped and each item keeps its own entry's and change's identity, in order
    assert [m.wamid for m in batch.inbound] == [
        f"wamid.in.{e}{c}.{m}" for e in range(2) for c in range(2) for m in range(3)
    ]
    assert [s.wamid for s in batch.statuses] == [
        f"wamid.out.{e}{c}.{s}" for e in range(2) for c in range(2) for s in range(2)
    ]
    assert len(batch.contacts) == 4
    for item in batch.inbound:
        tag = item.wamid.split(".")[2]
        assert (item.waba_id, item.phone_number_id, item.contact_name) == (
            f"WABA{tag[0]}",
            f"PN{tag}",
            f"User {tag}",
        )
    assert {(s.waba_id, s.phone_number_id) for s in batch.statuses} == {
        (f"WABA{e}", f"PN{e}{c}") for e in range(2) for c in range(2)
    }


def test_unknown_change_fields_are_skipped_and_counted() -> None:
    payload = envelope(
        entry(
            {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
            change(messages=[message("wamid.1", "text", {"body": "x"})]),
            {"field": "account_update", "value": "whatever"},
        )
    )
    batch = parse_meta_webhook(payload)
    assert batch.skipped_changes == 2
    assert [m.wamid for m in batch.inbound] == ["wamid.1"]


def test_empty_entry_list_is_an_empty_batch() -> None:
    assert parse_meta_webhook(envelope()) == MetaBatch()


# --- message types --------------------------------------------------------------------------------


def test_image_message_exposes_media_and_caption() -> None:
    msg = only_inbound(
        message(
            "wamid.img",
            "image",
            {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "hi"},
        )
    )
    assert (msg.type, msg.text, msg.media_id, msg.mime_type) == ("image", "hi", "MEDIA1", "image/jpeg")


def test_image_without_caption_has_no_text() -> None:
    msg = only_inbound(message("wamid.img", "image", {"id": "MEDIA1", "mime_type": "image/png"}))
    assert msg.text is None and msg.media_id == "MEDIA1"


@pytest.mark.parametrize(
    ("kind", "reply"),
    [
        ("button_reply", {"id": "yes-btn", "title": "Yes"}),
        ("list_reply", {"id": "row-2", "title": "Yes", "description": "second row"}),
    ],
)
def test_interactive_replies_expose_title_and_id(kind: str, reply: dict[str, str]) -> None:
    msg = only_inbound(
        message(
            "wamid.int",
            "interactive",
            {"type": kind, kind: reply},
            context={"from": DISPLAY, "id": "wamid.q"},
        )
    )
    assert (msg.text, msg.reply_id, msg.context_wamid) == ("Yes", reply["id"], "wamid.q")


def test_template_button_reply_carries_payload_and_template_context() -> None:
    msg = only_inbound(
        message(
            "wamid.btn",
            "button",
            {"payload": "STOP_PROMOS", "text": "Stop promotions"},
            context={"from": DISPLAY, "id": "wamid.template"},
        )
    )
    assert (msg.text, msg.reply_id) == ("Stop promotions", "STOP_PROMOS")
    assert (msg.context_wamid, msg.context_from) == ("wamid.template", DISPLAY)


def test_reaction_and_reaction_removal() -> None:
    added = only_inbound(message("wamid.r1", "reaction", {"message_id": "wamid.target", "emoji": "\U0001f44d"}))
    removed = only_inbound(message("wamid.r2", "reaction", {"message_id": "wamid.target"}))
    assert (added.text, added.reaction_to, added.reaction_removed) == ("\U0001f44d", "wamid.target", False)
    assert (removed.text, removed.reaction_to, removed.reaction_removed) == (None, "wamid.target", True)


@pytest.mark.parametrize("msg_type", ["unsupported", "some_future_type"])
def test_unsupported_and_unknown_types_are_kept_with_raw(msg_type: str) -> None:
    raw = message("wamid.u", msg_type, errors=[{"code": 131051, "title": "Message type unknown"}], future_key={"a": 1})
    msg = only_inbound(raw)
    assert (msg.type, msg.text, msg.reply_id, msg.media_id) == (msg_type, None, None, None)
    assert msg.raw == raw


def test_wrongly_typed_optional_content_reads_as_absent() -> None:
    msg = only_inbound(message("wamid.t", "text", {"body": 42}, context="not-an-object"))
    assert msg.text is None and msg.context_wamid is None


def test_contact_name_only_matches_the_sender() -> None:
    payload = envelope(
        entry(
            change(
                contacts=[{"profile": {"name": "Someone else"}, "wa_id": "999"}],
                messages=[message("wamid.1", "text", {"body": "x"})],
            )
        )
    )
    assert parse_meta_webhook(payload).inbound[0].contact_name is None


# --- statuses and system errors -------------------------------------------------------------------


def test_status_extras_and_unknown_status_kept() -> None:
    extra = {
        "biz_opaque_callback_data": "zapq:msg:42",
        "conversation": {"id": "CONV1", "origin": {"type": "service"}},
    }
    payload = envelope(entry(change(statuses=[status("wamid.1", "sent", **extra), status("wamid.2", "deleted")])))
    first, second = parse_meta_webhook(payload).statuses
    assert (first.biz_opaque_callback_data, first.conversation_id) == ("zapq:msg:42", "CONV1")
    assert second.status == "deleted"


def test_system_errors_are_collected() -> None:
    error = {
        "code": 131000,
        "title": "Something went wrong",
        "message": "Something went wrong",
        "error_data": {"details": "Unknown error"},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }
    batch = parse_meta_webhook(envelope(entry(change(errors=[error]))))
    (system_error,) = batch.system_errors
    assert (system_error.code, system_error.title, system_error.details) == (
        131000,
        "Something went wrong",
        "Unknown error",
    )
    assert (system_error.waba_id, system_error.phone_number_id) == (WABA, NUMBER_ID)
