"""Meta webhook failures: a bad item fails the whole batch with a JSON path; bad JSON; depth limits."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from libs.errors import ParseError, PermanentError
from libs.whatsapp import parse_meta_webhook
from libs.whatsapp._json import MAX_DEPTH
from tests.whatsapp.meta_builders import change, entry, envelope, fixture_bytes, message, status

# --- failures -------------------------------------------------------------------------------------


def _batch_with_messages(messages: list[Any]) -> dict[str, Any]:
    valid = [message(f"wamid.{i}", "text", {"body": "ok"}) for i in range(3)]
    return envelope(entry(change(), change(messages=valid + messages)))


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ("a string", "entry[0].changes[1].value.messages[3]"),
        ({"from": "1", "timestamp": "1", "type": "text"}, "entry[0].changes[1].value.messages[3].id"),
        (
            {"id": 7, "from": "1", "timestamp": "1", "type": "text"},
            "entry[0].changes[1].value.messages[3].id",
        ),
        (
            {"id": "w", "from": "1", "timestamp": "1.5", "type": "text"},
            "entry[0].changes[1].value.messages[3].timestamp",
        ),
        (
            {"id": "w", "from": "1", "timestamp": "1", "type": None},
            "entry[0].changes[1].value.messages[3].type",
        ),
        ({"id": "w", "timestamp": "1", "type": "text"}, "entry[0].changes[1].value.messages[3].from"),
    ],
)
def test_a_bad_item_fails_the_whole_batch_with_its_path(bad: Any, path: str) -> None:
    # Given three valid messages followed by a malformed one
    # When the batch is parsed, Then nothing is returned and the error names the malformed value
    with pytest.raises(ParseError) as info:
        parse_meta_webhook(_batch_with_messages([bad]))
    assert info.value.path == path
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.update(object="page"), "object"),
        (lambda p: p.pop("entry"), "entry"),
        (lambda p: p["entry"][0].pop("id"), "entry[0].id"),
        (lambda p: p["entry"][0].update(changes={}), "entry[0].changes"),
        (lambda p: p["entry"][0]["changes"][0].pop("field"), "entry[0].changes[0].field"),
        (lambda p: p["entry"][0]["changes"][0].update(value=[]), "entry[0].changes[0].value"),
        (
            lambda p: p["entry"][0]["changes"][0]["value"].update(statuses="x"),
            "entry[0].changes[0].value.statuses",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"].pop("metadata"),
            "entry[0].changes[0].value.metadata",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["metadata"].update(phone_number_id=1),
            "entry[0].changes[0].value.metadata.phone_number_id",
        ),
        (
            lambda p: p["entry"][0]["changes"][0]["value"]["contacts"][0].pop("wa_id"),
            "entry[0].changes[0].value.contacts[0].wa_id",
        ),
    ],
)
def test_structural_errors_carry_their_path(mutate: Any, path: str) -> None:
    payload = copy.deepcopy(json.loads(fixture_bytes("meta_incoming_text.json")))
    mutate(payload)
    with pytest.raises(ParseError) as info:
        parse_meta_webhook(payload)
    assert info.value.path == path


def test_status_without_id_fails_with_path() -> None:
    bad = status("wamid.x")
    del bad["id"]
    with pytest.raises(ParseError) as info:
        parse_meta_webhook(envelope(entry(change(statuses=[status("wamid.ok"), bad]))))
    assert info.value.path == "entry[0].changes[0].value.statuses[1].id"


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe{}", b"[]", b'"text"', b"null", b"[" * 5000 + b"]" * 5000, "{\ud800}"],
)
def test_invalid_json_or_top_level_raises_parse_error(body: Any) -> None:
    with pytest.raises(ParseError):
        parse_meta_webhook(body)


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    payload = envelope(entry(change(messages=[message("wamid.1", "text", {"body": "x"}, extra=deep)])))
    with pytest.raises(ParseError, match="nested deeper"):
        parse_meta_webhook(payload)
    with pytest.raises(ParseError, match="nested deeper"):
        parse_meta_webhook(orjson.dumps(payload))


def test_nesting_at_the_limit_is_read_from_text_and_from_a_dict() -> None:
    # A body with many brackets but shallow nesting takes the full walk and passes; one at the limit passes too
    wide = envelope(entry(change(messages=[message(f"wamid.{n}", "text", {"body": "{[" * 40}) for n in range(40)])))
    assert len(parse_meta_webhook(orjson.dumps(wide)).inbound) == 40
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH - 10):
        node["x"] = {}
        node = node["x"]
    payload = envelope(entry(change(messages=[message("wamid.1", "text", {"body": "x"}, extra=deep)])))
    assert len(parse_meta_webhook(payload).inbound) == 1
    assert len(parse_meta_webhook(orjson.dumps(payload)).inbound) == 1


def test_a_cyclic_dict_is_rejected_not_looped_on() -> None:
    payload = envelope()
    payload["loop"] = payload
    with pytest.raises(ParseError):
        parse_meta_webhook(payload)


def test_non_dict_non_bytes_input_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_meta_webhook(["not", "a", "payload"])  # type: ignore[arg-type]
