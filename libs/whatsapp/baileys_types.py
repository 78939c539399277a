"""Typed, immutable views of Evolution API (Baileys bridge) webhook events, built by :mod:`.baileys`.

Each event keeps the untouched ``data`` item it came from in ``raw`` (excluded from ``repr``, equality, hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

BAILEYS_STATUS_MAP: dict[str, str] = {
    "ERROR": "failed",
    "PENDING": "pending",
    "SERVER_ACK": "sent",
    "DELIVERY_ACK": "delivered",
    "READ": "read",
    "PLAYED": "played",
    "DELETED": "deleted",
}
"""Evolution API message status → zapq status vocabulary (unknown values are kept as sent)."""

BAILEYS_NUMERIC_STATUS_MAP: dict[int, str] = {
    0: "failed",
    1: "pending",
    2: "sent",
    3: "delivered",
    4: "read",
    5: "played",
}
"""Baileys' numeric ``WebMessageInfo.Status`` (sent by some bridge versions) → zapq status vocabulary."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BaileysMessageUpsert:
    """``messages.upsert``: a message received (``from_me=False``) or sent from the linked phone."""

    instance: str
    """The Evolution instance name (envelope ``instance``): identifies our connection."""
    key_id: str
    """``key.id``: the WhatsApp message id, the dedup key."""
    remote_jid: str
    """``key.remoteJid``: the chat (``<digits>@s.whatsapp.net``, ``…@g.us`` for groups, ``…@lid``)."""
    from_me: bool
    """``key.fromMe``."""
    phone: str | None = None
    """Digits before ``@`` (device suffix dropped) for person JIDs; ``None`` for groups, LIDs and others."""
    participant: str | None = None
    """``key.participant``: the sender inside a group chat."""
    push_name: str | None = None
    """``pushName``: the sender's profile name."""
    message_type: str = "unknown"
    """``messageType`` (``conversation``, ``imageMessage``, …); else the first key of ``message``."""
    text: str | None = None
    """Human-readable content: conversation, extended text, media caption, reaction emoji, reply title."""
    status: str | None = None
    """``status`` mapped to zapq's vocabulary (usually ``delivered`` for inbound)."""
    timestamp: int | None = None
    """``messageTimestamp`` in unix seconds."""
    quoted_id: str | None = None
    """``contextInfo.stanzaId``: the id of the message this one replies to."""
    reaction_to: str | None = None
    """``reactionMessage.key.id``: the message a reaction applies to."""
    reaction_removed: bool = False
    """``True`` for a reaction with an empty emoji (the user removed their reaction)."""
    content: dict[str, Any] | None = None
    """The kind's structured content (:mod:`libs.whatsapp.content`); ``None`` for plain text."""
    context: dict[str, Any] | None = None
    """``{message_id?, from?, forwarded, frequently_forwarded}`` from ``contextInfo``."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The ``data`` item exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BaileysMessageUpdate:
    """``messages.update``: a status change of a message (delivery ack, read, deletion…)."""

    instance: str
    """The Evolution instance name."""
    key_id: str
    """``keyId`` (or ``key.id``): the WhatsApp message id returned when we sent it."""
    remote_jid: str
    """``remoteJid``."""
    from_me: bool
    """``fromMe``: ``True`` for statuses of messages we sent."""
    status: str | None = None
    """Mapped status (``sent``, ``delivered``, ``read``, ``played``, ``failed``, ``pending``, ``deleted``);
    unknown values are kept as sent; ``None`` when the update has no status (e.g. poll or edit updates)."""
    participant: str | None = None
    """``participant`` (group chats)."""
    message_id: str | None = None
    """``messageId``: the bridge's own database id of the message, when sent."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The ``data`` item exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BaileysConnectionUpdate:
    """``connection.update``: the WhatsApp session of an instance changed state."""

    instance: str
    """The Evolution instance name."""
    state: str
    """``open``, ``connecting``, ``close``, ``refused``; other values are kept as sent."""
    status_reason: int | None = None
    """``statusReason`` (e.g. 401 logged out, 428 connection closed, 515 restart required)."""
    wuid: str | None = None
    """``wuid``: the JID of the linked number, when known."""
    profile_name: str | None = None
    """``profileName``."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The ``data`` object exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BaileysOther:
    """Any other event (``qrcode.updated``, ``chats.upsert``, …): recognised as valid, otherwise ignored."""

    event: str
    """The event name, normalised to lowercase-dotted form."""
    instance: str
    """The Evolution instance name."""
    raw: Any = field(default=None, repr=False, compare=False)
    """The envelope's ``data`` exactly as received (any JSON value)."""


BaileysEvent: TypeAlias = BaileysMessageUpsert | BaileysMessageUpdate | BaileysConnectionUpdate | BaileysOther
"""One parsed Evolution API webhook event."""
