"""Typed, immutable views of the items a Meta Cloud API webhook carries (built by :mod:`libs.whatsapp.meta`).

Every item keeps the untouched JSON dict it came from in ``raw`` (excluded from ``repr``, equality and hash),
so a field that is not normalised here is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

META_OBJECT = "whatsapp_business_account"
"""The only ``object`` value a WhatsApp Business webhook may carry."""

META_MESSAGES_FIELD = "messages"
"""The ``changes[].field`` holding inbound messages, statuses and system errors; other fields are skipped."""

META_TEMPLATE_STATUS_FIELD = "message_template_status_update"
"""The ``changes[].field`` of a template's status change (approved, rejected, paused, disabled, …)."""

META_MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})
"""Message types whose type object carries a media ``id`` and ``mime_type``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """One ``value.messages[]`` item: a message a WhatsApp user sent to one of our business numbers."""

    waba_id: str
    """``entry[].id``: the WhatsApp Business Account id."""
    phone_number_id: str
    """``value.metadata.phone_number_id``: our business number that received the message."""
    display_phone_number: str | None
    """``value.metadata.display_phone_number``."""
    wamid: str
    """``id``: Meta's message id, the natural dedup key."""
    from_wa_id: str
    """``from``: the sender's WhatsApp id (may differ from the number that was dialled)."""
    timestamp: int
    """Unix seconds (Meta sends a decimal string)."""
    type: str
    """Meta's message ``type``, kept as sent for types this module does not know (e.g. ``unsupported``)."""
    text: str | None = None
    """Human-readable content: text body, media caption, reply title, button text or reaction emoji."""
    media_id: str | None = None
    """Media id for image/audio/video/document/sticker (download it with the media API)."""
    mime_type: str | None = None
    """Media MIME type, alongside ``media_id``."""
    reply_id: str | None = None
    """The id the user chose: ``interactive`` button/list reply id, or the template ``button.payload``."""
    context_wamid: str | None = None
    """``context.id``: the wamid of the message this one replies to (a template for ``button`` messages)."""
    context_from: str | None = None
    """``context.from``: the sender of the message this one replies to."""
    reaction_to: str | None = None
    """``reaction.message_id``: the wamid the reaction applies to."""
    reaction_removed: bool = False
    """``True`` for a reaction without an emoji, i.e. the user removed their reaction."""
    contact_name: str | None = None
    """``contacts[].profile.name`` of the contact whose ``wa_id`` equals ``from_wa_id``."""
    content: dict[str, Any] | None = None
    """The kind's structured content (:mod:`libs.whatsapp.content`); ``None`` for plain text."""
    context: dict[str, Any] | None = None
    """``context``: ``{message_id?, from?, forwarded, frequently_forwarded, referred_product?}``."""
    errors: list[dict[str, Any]] | None = None
    """The item's ``errors`` (``unsupported`` messages): ``[{code, title, details}]``."""
    referral: dict[str, Any] | None = None
    """``referral``: the click-to-WhatsApp ad the user came from, as sent."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The message dict exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """One ``value.statuses[]`` item: a delivery status for a message we sent."""

    waba_id: str
    """``entry[].id``."""
    phone_number_id: str
    """``value.metadata.phone_number_id``: our business number that sent the message."""
    wamid: str
    """``id``: the wamid returned when the message was sent."""
    status: str
    """``sent``, ``delivered``, ``read``, ``failed``, ``played``; unknown values are kept as sent."""
    timestamp: int
    """Unix seconds."""
    recipient_id: str | None = None
    """The recipient's WhatsApp id."""
    error_code: int | None = None
    """``errors[0].code`` (failed statuses): classify failures by this, never by text."""
    error_title: str | None = None
    """``errors[0].title``."""
    error_message: str | None = None
    """``errors[0].message``."""
    error_details: str | None = None
    """``errors[0].error_data.details``."""
    pricing_category: str | None = None
    """``pricing.category`` (present on one status per message only)."""
    pricing_model: str | None = None
    """``pricing.pricing_model``."""
    billable: bool | None = None
    """``pricing.billable``."""
    conversation_id: str | None = None
    """``conversation.id`` (omitted from Graph v24.0 except in free-entry-point windows)."""
    biz_opaque_callback_data: str | None = None
    """The string we attached when sending, echoed back (useful to carry our own message id)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The status dict exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactInfo:
    """One ``value.contacts[]`` item: the profile of a user who wrote to us."""

    waba_id: str
    """``entry[].id``."""
    phone_number_id: str | None
    """``value.metadata.phone_number_id``."""
    wa_id: str
    """The user's WhatsApp id."""
    name: str | None = None
    """``profile.name``."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The contact dict exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaSystemError:
    """One ``value.errors[]`` item: a system-level error Meta reports outside any message status.

    Named ``MetaSystemError`` rather than ``SystemError`` so as not to shadow the Python built-in.
    """

    waba_id: str
    """``entry[].id``."""
    phone_number_id: str | None
    """``value.metadata.phone_number_id`` if present."""
    code: int | None = None
    """Meta's error code."""
    title: str | None = None
    """``title``."""
    message: str | None = None
    """``message``."""
    details: str | None = None
    """``error_data.details``."""
    href: str | None = None
    """``href`` to Meta's error-code documentation."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The error dict exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateStatusUpdate:
    """One ``message_template_status_update`` change: Meta changed the status of one of the WABA's templates."""

    waba_id: str
    """``entry[].id``: the WhatsApp Business Account the template belongs to."""
    event: str
    """The new status: APPROVED, REJECTED, PAUSED, DISABLED, PENDING, FLAGGED, REINSTATED, … (kept as sent)."""
    name: str
    """``message_template_name``."""
    language: str
    """``message_template_language`` (``en_US``)."""
    template_id: str | None = None
    """``message_template_id`` (a JSON number in Meta's payload)."""
    category: str | None = None
    """``message_template_category``, when sent."""
    reason: str | None = None
    """Why: ``reason`` (``INVALID_FORMAT``, …; ``NONE`` reads as absent), else ``other_info.title``
    (``FIRST_PAUSE``, …) or ``rejection_info.reason``."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The change's ``value`` exactly as received."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaBatch:
    """Everything one webhook POST carried, flattened over every ``entry[]`` and ``changes[]`` in order."""

    inbound: tuple[InboundMessage, ...] = ()
    """Inbound messages, in payload order."""
    statuses: tuple[StatusUpdate, ...] = ()
    """Status updates, in payload order (Meta gives no ordering guarantee across POSTs)."""
    contacts: tuple[ContactInfo, ...] = ()
    """Contact profiles."""
    system_errors: tuple[MetaSystemError, ...] = ()
    """System-level errors."""
    template_statuses: tuple[TemplateStatusUpdate, ...] = ()
    """Template status changes (``message_template_status_update``)."""
    skipped_changes: int = 0
    """Number of ``changes[]`` of other fields than ``messages`` and the template status (account updates, …)."""
