"""Parse Evolution API (Baileys bridge) webhook envelopes into typed events (pure, no I/O).

Envelope: ``{"event": "messages.upsert", "instance": "<name>", "data": {...}, ...}``. The ``event`` name is
lowercase-dotted on the wire; the UPPER_SNAKE form used in webhook filters (``MESSAGES_UPSERT``) is accepted
too and normalised to the dotted one.

:func:`parse_baileys_events` is the main entry point and returns a **list**, because some bridge versions send
``data`` as an array for ``messages.upsert``/``messages.update`` (or the raw Baileys ``{"messages": [...]}``
shape). :func:`parse_baileys_event` is kept for callers that expect exactly one event and raises
:class:`~libs.errors.ParseError` if the payload holds zero or several.

Failure policy, as for Meta — *structure and identity strict, content lenient*: a bad envelope (``event``,
``instance``), a non-object ``data`` item, or missing identity (``key.id``/``keyId``, ``remoteJid``,
``fromMe``, connection ``state``) fails the whole payload with a ``ParseError`` carrying the path (e.g.
``data[2].key.id``). Unknown events are never an error: they become :class:`BaileysOther`. Optional content of
the wrong type reads as absent; the untouched item stays in ``raw``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from libs.errors import ParseError
from libs.whatsapp._json import (
    JsonObject,
    iter_objects,
    load_object,
    opt_dict,
    opt_int,
    opt_str,
    parse_timestamp,
    req_bool,
    req_dict,
    req_str,
    type_name,
)
from libs.whatsapp.baileys_types import (
    BAILEYS_NUMERIC_STATUS_MAP,
    BAILEYS_STATUS_MAP,
    BaileysConnectionUpdate,
    BaileysEvent,
    BaileysMessageUpdate,
    BaileysMessageUpsert,
    BaileysOther,
)
from libs.whatsapp.content import baileys_content, baileys_context

_PERSON_SERVERS = frozenset({"s.whatsapp.net", "c.us"})
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
)
_MAX_UNWRAP = 4
_TEXT_FIELDS = (
    ("extendedTextMessage", "text"),
    ("imageMessage", "caption"),
    ("videoMessage", "caption"),
    ("documentMessage", "caption"),
    ("reactionMessage", "text"),
    ("buttonsResponseMessage", "selectedDisplayText"),
    ("listResponseMessage", "title"),
    ("templateButtonReplyMessage", "selectedDisplayText"),
)


def normalize_event_name(name: str) -> str:
    """Return the lowercase-dotted event name (``MESSAGES_UPSERT`` → ``messages.upsert``)."""
    return name.strip().lower().replace("_", ".")


def map_baileys_status(value: object) -> str | None:
    """Map an Evolution/Baileys message status (name or number) to zapq's vocabulary.

    ``SERVER_ACK``→``sent``, ``DELIVERY_ACK``→``delivered``, ``READ``→``read``, ``PLAYED``→``played``,
    ``ERROR``→``failed``, ``PENDING``→``pending``, ``DELETED``→``deleted``; unknown values are returned as
    sent (numbers as their decimal string); ``None`` when there is no usable status.
    """
    if isinstance(value, str):
        return BAILEYS_STATUS_MAP.get(value.upper(), value) if value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return BAILEYS_NUMERIC_STATUS_MAP.get(value, str(value))
    return None


def parse_baileys_events(payload: bytes | dict[str, Any]) -> list[BaileysEvent]:
    """Parse one Evolution API webhook (raw JSON bytes or a decoded dict) into its events, in order.

    Raises :class:`~libs.errors.ParseError` for invalid JSON, a bad envelope or a malformed known event; never
    raises any other exception for JSON-like input. Unknown events yield a single :class:`BaileysOther`.
    """
    envelope = load_object(payload)
    event = normalize_event_name(req_str(envelope, "event", "event"))
    instance = req_str(envelope, "instance", "instance")
    if event == "messages.upsert":
        return [_upsert(item, path, instance) for path, item in _data_items(envelope)]
    if event == "messages.update":
        return [_update(item, path, instance) for path, item in _data_items(envelope)]
    if event == "connection.update":
        return [_connection(req_dict(envelope, "data", "data"), instance)]
    return [BaileysOther(event=event, instance=instance, raw=envelope.get("data"))]


def parse_baileys_event(payload: bytes | dict[str, Any]) -> BaileysEvent:
    """Parse a webhook that must carry exactly one event (see :func:`parse_baileys_events` for batches)."""
    events = parse_baileys_events(payload)
    if len(events) != 1:
        raise ParseError(f"expected exactly one event, got {len(events)}", path="data")
    return events[0]


def _data_items(envelope: JsonObject) -> Iterator[tuple[str, JsonObject]]:
    """Yield ``(path, item)`` for ``data`` as an object, an array of objects or ``{"messages": [...]}``."""
    data = envelope.get("data")
    if isinstance(data, list):
        yield from iter_objects(data, "data")
    elif isinstance(data, dict):
        messages = data.get("messages")
        if isinstance(messages, list) and "key" not in data and "keyId" not in data:
            yield from iter_objects(messages, "data.messages")
        else:
            yield "data", data
    else:
        got = type_name(data) if "data" in envelope else "missing"
        raise ParseError(f"expected an object or an array, got {got}", path="data")


def _upsert(item: JsonObject, path: str, instance: str) -> BaileysMessageUpsert:
    """Build a :class:`BaileysMessageUpsert` from one ``messages.upsert`` data item."""
    key = req_dict(item, "key", f"{path}.key")
    key_id = req_str(key, "id", f"{path}.key.id")
    remote_jid = req_str(key, "remoteJid", f"{path}.key.remoteJid")
    from_me = req_bool(key, "fromMe", f"{path}.key.fromMe")
    message = _unwrap(opt_dict(item, "message"))
    reaction = opt_dict(message, "reactionMessage")
    reaction_removed = reaction is not None and not opt_str(reaction, "text")
    return BaileysMessageUpsert(
        instance=instance,
        key_id=key_id,
        remote_jid=remote_jid,
        from_me=from_me,
        phone=jid_phone(remote_jid),
        participant=opt_str(key, "participant"),
        push_name=opt_str(item, "pushName"),
        message_type=opt_str(item, "messageType") or _first_type(message) or "unknown",
        text=None if reaction_removed else _text(message),
        status=map_baileys_status(item.get("status")),
        timestamp=_timestamp(item.get("messageTimestamp")),
        quoted_id=_quoted_id(item, message),
        reaction_to=opt_str(opt_dict(reaction, "key"), "id"),
        reaction_removed=reaction_removed,
        content=baileys_content(message),
        context=baileys_context(item, message),
        raw=item,
    )


def _update(item: JsonObject, path: str, instance: str) -> BaileysMessageUpdate:
    """Build a :class:`BaileysMessageUpdate` from one ``messages.update`` item (v2 flat or keyed shape)."""
    key = item.get("key")
    if "keyId" not in item and isinstance(key, dict):
        # Older / raw Baileys shape: {"key": {...}, "update": {"status": ...}}.
        ident, ident_path, id_field = key, f"{path}.key", "id"
    else:
        ident, ident_path, id_field = item, path, "keyId"
    status: object = item.get("status")
    if status is None:
        status = (opt_dict(item, "update") or {}).get("status")
    return BaileysMessageUpdate(
        instance=instance,
        key_id=req_str(ident, id_field, f"{ident_path}.{id_field}"),
        remote_jid=req_str(ident, "remoteJid", f"{ident_path}.remoteJid"),
        from_me=req_bool(ident, "fromMe", f"{ident_path}.fromMe"),
        status=map_baileys_status(status),
        participant=opt_str(ident, "participant"),
        message_id=opt_str(item, "messageId"),
        raw=item,
    )


def _connection(data: JsonObject, instance: str) -> BaileysConnectionUpdate:
    """Build a :class:`BaileysConnectionUpdate` from the ``connection.update`` data object."""
    return BaileysConnectionUpdate(
        instance=instance,
        state=req_str(data, "state", "data.state"),
        status_reason=opt_int(data, "statusReason"),
        wuid=opt_str(data, "wuid"),
        profile_name=opt_str(data, "profileName"),
        raw=data,
    )


def jid_phone(jid: str) -> str | None:
    """Return the phone digits of a person JID (``5511…:3@s.whatsapp.net`` → ``5511…``), else ``None``."""
    user, _, server = jid.partition("@")
    if server not in _PERSON_SERVERS:
        return None
    digits = user.split(":", 1)[0].split("_", 1)[0]  # drop the device (":3") and agent ("_1") suffixes
    return digits if digits.isascii() and digits.isdigit() else None


def _unwrap(message: JsonObject | None) -> JsonObject | None:
    """Strip container messages (ephemeral, view-once, document-with-caption) down to the content message."""
    for _ in range(_MAX_UNWRAP):
        inner = next((m for w in _WRAPPERS if (m := opt_dict(opt_dict(message, w), "message"))), None)
        if inner is None:
            break
        message = inner
    return message


def _first_type(message: JsonObject | None) -> str | None:
    """Guess the message type from the first object-valued key of ``message`` (no ``messageType`` sent)."""
    if message is None:
        return None
    types = (k for k, v in message.items() if isinstance(k, str) and isinstance(v, dict))
    return next((k for k in types if k != "messageContextInfo"), None)


def _text(message: JsonObject | None) -> str | None:
    """Return the human-readable content of a Baileys message, if it has one."""
    conversation = opt_str(message, "conversation")
    if conversation is not None:
        return conversation
    for container, attr in _TEXT_FIELDS:
        value = opt_str(opt_dict(message, container), attr)
        if value is not None:
            return value
    return None


def _quoted_id(item: JsonObject, message: JsonObject | None) -> str | None:
    """Return ``contextInfo.stanzaId`` from the item or from the content message's type object."""
    quoted = opt_str(opt_dict(item, "contextInfo"), "stanzaId")
    if quoted is None and message is not None:
        contexts = (opt_dict(v, "contextInfo") for v in message.values())
        quoted = next((q for c in contexts if (q := opt_str(c, "stanzaId"))), None)
    return quoted


def _timestamp(value: object) -> int | None:
    """Read ``messageTimestamp``: integer, digit string, or a protobuf Long ``{"low", "high"}`` object."""
    if isinstance(value, dict):
        low, high = opt_int(value, "low"), opt_int(value, "high")
        if low is None or high is None or not 0 <= high < 2**21:
            return None
        return (high << 32) | (low & 0xFFFFFFFF)
    return parse_timestamp(value)
