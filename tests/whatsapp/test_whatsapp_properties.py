"""Property-based tests: for any input the parsers return their typed result or raise ParseError only."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.errors import ParseError
from libs.whatsapp import (
    BaileysConnectionUpdate,
    BaileysMessageUpdate,
    BaileysMessageUpsert,
    BaileysOther,
    MetaBatch,
    parse_baileys_events,
    parse_meta_webhook,
)

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAILEYS_TYPES = (BaileysMessageUpsert, BaileysMessageUpdate, BaileysConnectionUpdate, BaileysOther)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "1749416383", "text", "messages", "wamid.X", "READ", "1.5", "-1", "\u0663"])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=24,
)


def load(name: str) -> dict[str, Any]:
    """Return a decoded fixture."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_bytes())
    return data


def rich_meta_payload() -> dict[str, Any]:
    """A valid payload touching every branch: all message types, statuses, contacts, errors, skipped field."""
    value = load("meta_incoming_text.json")["entry"][0]["changes"][0]["value"]
    base = {"from": "16505551234", "timestamp": "1749416383"}
    value["messages"] += [
        {
            **base,
            "id": "w2",
            "type": "image",
            "image": {"id": "M", "mime_type": "image/jpeg", "caption": "c"},
        },
        {
            **base,
            "id": "w3",
            "type": "interactive",
            "interactive": {"type": "list_reply", "list_reply": {"id": "r"}},
        },
        {
            **base,
            "id": "w4",
            "type": "button",
            "button": {"payload": "P", "text": "T"},
            "context": {"id": "w0"},
        },
        {**base, "id": "w5", "type": "reaction", "reaction": {"message_id": "w1", "emoji": "x"}},
        {**base, "id": "w6", "type": "unsupported", "errors": [{"code": 131051}]},
    ]
    failed = load("meta_status_failed.json")["entry"][0]["changes"][0]["value"]["statuses"]
    value["statuses"] = failed + load("meta_status_delivered.json")["entry"][0]["changes"][0]["value"]["statuses"]
    value["errors"] = [{"code": 1, "title": "t", "error_data": {"details": "d"}}]
    skipped = {"field": "account_update", "value": {"x": 1}}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}, skipped]}],
    }


META_SEEDS = [
    rich_meta_payload(),
    load("meta_incoming_text.json"),
    load("meta_status_failed.json"),
    load("meta_status_delivered.json"),
]
BAILEYS_SEEDS = [
    load("evolution_messages_upsert.json"),
    load("evolution_messages_update.json"),
    load("evolution_connection_update.json"),
    load("evolution_messages_upsert.json") | {"data": [load("evolution_messages_upsert.json")["data"]] * 2},
]


def all_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path (keys / indexes) of every value nested in ``node``."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from all_paths(child, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Draw a seed payload and apply 1-3 mutations: drop a key/item, swap a value's type, or wrap it."""
    payload = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(all_paths(payload))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["drop", "replace", "wrap", "stringify"]))
        if action == "drop":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "wrap":
            parent[key] = [parent[key]]
        else:
            parent[key] = json.dumps(parent[key])
    return payload


def check_meta(payload: Any) -> None:
    """Assert the Meta parser returns a MetaBatch or raises ParseError with a str path."""
    try:
        result = parse_meta_webhook(payload)
    except ParseError as exc:
        assert isinstance(exc.path, str)
    else:
        assert isinstance(result, MetaBatch)


def check_baileys(payload: Any) -> None:
    """Assert the Baileys parser returns typed events or raises ParseError with a str path."""
    try:
        events = parse_baileys_events(payload)
    except ParseError as exc:
        assert isinstance(exc.path, str)
    else:
        assert all(isinstance(event, BAILEYS_TYPES) for event in events)


@SETTINGS
@given(json_values)
def test_meta_any_json_value(value: Any) -> None:
    check_meta(value)
    check_meta({"object": "whatsapp_business_account", "entry": value})


@SETTINGS
@given(st.binary(max_size=256) | json_values.map(lambda v: json.dumps(v).encode()))
def test_meta_any_bytes(body: bytes) -> None:
    check_meta(body)


@SETTINGS
@given(mutated(META_SEEDS))
def test_meta_mutated_valid_payloads(payload: dict[str, Any]) -> None:
    check_meta(payload)
    if _dumpable(payload):
        check_meta(orjson.dumps(payload))


@SETTINGS
@given(json_values, st.sampled_from(["messages.upsert", "MESSAGES_UPDATE", "connection.update", "other", ""]))
def test_baileys_any_json_value(value: Any, event: str) -> None:
    check_baileys(value)
    check_baileys({"event": event, "instance": "x", "data": value})


@SETTINGS
@given(st.binary(max_size=256) | json_values.map(lambda v: json.dumps(v).encode()))
def test_baileys_any_bytes(body: bytes) -> None:
    check_baileys(body)


@SETTINGS
@given(mutated(BAILEYS_SEEDS))
def test_baileys_mutated_valid_payloads(payload: dict[str, Any]) -> None:
    check_baileys(payload)


@settings(max_examples=100, deadline=None)
@given(
    shape=st.lists(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=3), max_size=3),
    text=st.text(max_size=30),
)
def test_meta_every_generated_item_is_parsed(shape: list[list[tuple[int, int]]], text: str) -> None:
    # Given entries x changes, each change with n messages and k statuses (text with any unicode)
    entries = []
    for e, changes in enumerate(shape):
        built = []
        for c, (n, k) in enumerate(changes):
            msgs = [
                {
                    "from": "1",
                    "id": f"in.{e}.{c}.{i}",
                    "timestamp": "1",
                    "type": "text",
                    "text": {"body": text},
                }
                for i in range(n)
            ]
            sts = [{"id": f"out.{e}.{c}.{i}", "status": "read", "timestamp": 2} for i in range(k)]
            value = {"metadata": {"phone_number_id": f"P{e}{c}"}, "messages": msgs, "statuses": sts}
            built.append({"field": "messages", "value": value})
        entries.append({"id": f"W{e}", "changes": built})
    body = json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()
    # When parsed from ensure_ascii bytes, Then every item comes out, in order, with its text intact
    batch = parse_meta_webhook(body)
    assert [m.wamid for m in batch.inbound] == [
        f"in.{e}.{c}.{i}" for e, ch in enumerate(shape) for c, (n, _) in enumerate(ch) for i in range(n)
    ]
    assert [s.wamid for s in batch.statuses] == [
        f"out.{e}.{c}.{i}" for e, ch in enumerate(shape) for c, (_, k) in enumerate(ch) for i in range(k)
    ]
    assert all(m.text == text for m in batch.inbound)


def _dumpable(payload: Any) -> bool:
    """Whether orjson can serialise ``payload`` (it refuses integers beyond 64 bits)."""
    try:
        orjson.dumps(payload)
    except TypeError:
        return False
    return True
