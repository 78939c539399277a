"""The event types zapq publishes, the schema of each one's ``data``, and the envelope the feed returns.

These models are the published contract (``/openapi.json`` carries them). Events are written by SQL in the
transaction of their fact (:mod:`libs.events.outbox_store`); ``tests/events/test_event_schemas.py`` validates what that
SQL writes against these models, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MESSAGE_RECEIVED = "message.received"
MESSAGE_STATUS = "message.status"
MESSAGE_CREATED = "message.created"
CAMPAIGN_STATUS = "campaign.status"
CONNECTION_STATUS = "connection.status"
CONTACT_OPTED_OUT = "contact.opted_out"
CONTACT_OPTED_IN = "contact.opted_in"
#: An inbound message's media file was fetched from the provider and stored (``GET /api/media/{id}``).
MESSAGE_MEDIA = "message.media"
#: Sent by ``POST /api/webhook-endpoints/{id}/test`` only; never stored.
PING = "ping"

EVENT_TYPES: tuple[str, ...] = (
    MESSAGE_RECEIVED,
    MESSAGE_STATUS,
    MESSAGE_CREATED,
    CAMPAIGN_STATUS,
    CONNECTION_STATUS,
    CONTACT_OPTED_OUT,
    CONTACT_OPTED_IN,
    MESSAGE_MEDIA,
)

#: Public id of an event: ``evt_`` and 16 hex digits (sortable, no ``.`` as Standard Webhooks requires).
EVENT_ID_PREFIX = "evt_"
#: A public event id: the prefix and 16 hex digits, at most a Postgres bigint (the row id).
EVENT_ID_PATTERN = r"^evt_[0-7][0-9a-fA-F]{15}$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def event_id(internal_id: int) -> str:
    """The public id of the event row ``internal_id`` (the ``webhook-id`` of every delivery of it)."""
    return f"{EVENT_ID_PREFIX}{internal_id:016x}"


def parse_event_id(public_id: str) -> int | None:
    """The row id behind ``evt_…`` (:data:`EVENT_ID_PATTERN`); ``None`` when ``public_id`` is not one."""
    if not _EVENT_ID.fullmatch(public_id):
        return None
    return int(public_id.removeprefix(EVENT_ID_PREFIX), 16)


def unknown_types(types: list[str]) -> list[str]:
    """The names in ``types`` that are not event types (for 400/422 answers)."""
    return [name for name in types if name not in EVENT_TYPES]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactRef(_Data):
    """The WhatsApp user on the other side of a conversation."""

    wa_id: str
    name: str | None = None


class MediaRef(_Data):
    """Provider media of an inbound message (Meta's media id expires after 7 days)."""

    id: str | None = None
    mime_type: str | None = None


class ReplyContext(_Data):
    """The message an inbound message replies to, and whether it was forwarded."""

    message_id: str | None = Field(default=None, description="the provider id (wamid) of the message replied to")
    from_: str | None = Field(default=None, alias="from")
    forwarded: bool = False
    frequently_forwarded: bool = Field(default=False, description="forwarded more than 5 times")
    referred_product: dict[str, Any] | None = Field(default=None, description="{catalog_id, product_retailer_id}")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Reaction(_Data):
    """A reaction (emoji) to a message, or its removal."""

    message_id: str | None = None
    emoji: str | None = None
    removed: bool = False


class ErrorInfo(_Data):
    """The provider's error (Meta error code and title) of a failed message, and the WhatsApp rule it broke."""

    code: int | None = None
    title: str | None = None
    details: str | None = Field(default=None, description="Meta's error_data.details, when it sent them")
    #: ``outside_service_window``, ``marketing_limit``, … (``libs.rules.reasons``); ``null`` for a fault.
    reason: str | None = None


class MessageReceivedData(_Data):
    """``message.received``: a WhatsApp user wrote to one of the company's numbers."""

    message_id: int
    company_id: int
    connection_id: int | None
    external_id: str = Field(description="WhatsApp message id (wamid / Baileys key id)")
    contact: ContactRef
    type: str = Field(description="text, image, audio, video, document, sticker, interactive, button, reaction, …")
    text: str | None = Field(description="text body, media caption, button or reply title, reaction emoji")
    media: MediaRef | None = None
    context: ReplyContext | None = None
    reply_id: str | None = Field(default=None, description="the id of the button or list row the user chose")
    reaction: Reaction | None = None
    content: dict[str, Any] | None = Field(
        default=None,
        description="the kind's structured content, one shape for both providers: {kind, …} — media {id?, url?, "
        "mime_type?, sha256?, caption?, filename?, voice?, animated?}, location {latitude, longitude, name?, "
        "address?}, contacts {contacts}, button_reply/list_reply {id, title, description?}, button {payload, "
        "text}, reaction {message_id, emoji?}, unsupported {}; null for plain text",
    )
    errors: list[ErrorInfo] | None = Field(default=None, description="Meta's errors of an unsupported message")
    timestamp: dt.datetime


class MessageStatusData(_Data):
    """``message.status``: an outbound message was sent, delivered, read (played) or failed."""

    message_id: int
    company_id: int
    connection_id: int | None
    campaign_id: int | None
    external_id: str | None
    contact: ContactRef
    status: Literal["sent", "delivered", "read", "played", "failed"]
    previous_status: str
    error: ErrorInfo | None = None
    pricing: dict[str, Any] | None = Field(default=None, description="Meta's pricing object, when it sent one")
    conversation: dict[str, Any] | None = Field(default=None, description="Meta's conversation object, if sent")
    timestamp: dt.datetime


class MessageCreatedData(_Data):
    """``message.created``: an outbound message was accepted (from the API or a campaign) and queued."""

    message_id: int
    company_id: int
    connection_id: int | None
    campaign_id: int | None
    contact: ContactRef
    type: str
    text: str | None
    template: dict[str, Any] | None
    content: dict[str, Any] | list[Any] | None = Field(
        default=None, description="another kind's content in Meta's shape (image, interactive, contacts, …)"
    )
    priority: Literal["urgent", "normal", "low"]
    status: Literal["queued"]
    timestamp: dt.datetime


class CampaignCounters(_Data):
    """A campaign's counters at the time of the event."""

    recipients: int
    queued: int
    sent: int
    delivered: int
    read: int
    failed: int


class CampaignStatusData(_Data):
    """``campaign.status``: a campaign was scheduled, started, paused, resumed, completed or cancelled."""

    campaign_id: int
    company_id: int
    connection_id: int
    name: str
    status: Literal["scheduled", "started", "paused", "resumed", "completed", "cancelled"]
    #: Why zapq paused it (a template Meta paused or disabled; its number flagged: quality RED, a throughput
    #: downgrade); ``None`` for a pause by a user and for every other status.
    reason: str | None = None
    start_at: dt.datetime | None
    counters: CampaignCounters
    timestamp: dt.datetime


class ConnectionStatusData(_Data):
    """``connection.status``: a connection became active, inactive or needs attention (and why)."""

    connection_id: int
    company_id: int
    provider: Literal["meta", "baileys"]
    status: Literal["active", "inactive", "needs_attention"]
    previous_status: str
    reason: str | None
    timestamp: dt.datetime


class ContactOptOutData(_Data):
    """``contact.opted_out`` / ``contact.opted_in``: a number was put on / taken off the company's opt-out list
    (campaigns skip it; direct sends to it are refused unless transactional inside the service window)."""

    company_id: int
    contact: ContactRef
    status: Literal["opted_out", "opted_in"]
    #: ``keyword`` (an inbound opt-out / opt-in keyword), ``api``, ``cli`` or ``csv``.
    source: str
    timestamp: dt.datetime


class StoredMedia(_Data):
    """A media file zapq keeps: its id (``GET /api/media/{id}``), MIME type, size in bytes and SHA-256 (hex)."""

    id: str
    mime_type: str
    size: int
    sha256: str


class MessageMediaData(_Data):
    """``message.media``: the file of an inbound media message (image, video, audio, document, sticker) was
    fetched from the provider, checked and stored; follows that message's ``message.received``."""

    message_id: int
    company_id: int
    connection_id: int | None
    external_id: str | None
    contact: ContactRef
    type: str
    media: StoredMedia
    timestamp: dt.datetime


DATA_MODELS: dict[str, type[BaseModel]] = {
    MESSAGE_RECEIVED: MessageReceivedData,
    MESSAGE_STATUS: MessageStatusData,
    MESSAGE_CREATED: MessageCreatedData,
    CAMPAIGN_STATUS: CampaignStatusData,
    CONNECTION_STATUS: ConnectionStatusData,
    CONTACT_OPTED_OUT: ContactOptOutData,
    CONTACT_OPTED_IN: ContactOptOutData,
    MESSAGE_MEDIA: MessageMediaData,
}


class EventOut(BaseModel):
    """One published event, as the pull feed and the stream return it."""

    id: str = Field(description="evt_…: the webhook-id of its deliveries")
    type: Literal[
        "message.received",
        "message.status",
        "message.created",
        "campaign.status",
        "connection.status",
        "contact.opted_out",
        "contact.opted_in",
        "message.media",
    ]
    company_id: int
    sequence: int = Field(description="per-company sequence: consecutive, so a gap means a missed event")
    cursor: str = Field(description="pass as `after` (or Last-Event-ID) to continue after this event")
    conversation: str = Field(description="ordering key: contact:<wa_id>, campaign:<id> or connection:<id>")
    occurred_at: dt.datetime
    data: (
        MessageReceivedData
        | MessageStatusData
        | MessageCreatedData
        | CampaignStatusData
        | ConnectionStatusData
        | ContactOptOutData
        | MessageMediaData
    )


class EventPage(BaseModel):
    """A page of the pull feed."""

    events: list[EventOut]
    next_cursor: str = Field(description="pass as `after` to continue (also when `events` is empty)")
    has_more: bool = Field(description="true: more events are published already; ask again at once")


class WebhookBody(BaseModel):
    """The body of every delivery (Standard Webhooks): ``type``, event time and ``data``."""

    type: str
    timestamp: dt.datetime
    data: dict[str, Any]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (EventPage, EventOut, WebhookBody, *DATA_MODELS.values())
