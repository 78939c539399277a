"""Parse a Meta Cloud API webhook body into a :class:`~libs.whatsapp.meta_types.MetaBatch` (pure, no I/O).

One POST may batch up to 1000 updates, so every ``entry[]``, ``changes[]``, ``messages[]``, ``statuses[]``,
``contacts[]`` and ``value.errors[]`` is read — never only the first.

Failure policy — *structure and identity strict, content lenient*:

* The whole payload fails with :class:`~libs.errors.ParseError` (its ``path`` names the offending value, e.g.
  ``entry[0].changes[0].value.messages[3].id``) when the envelope is wrong (``object``, ``entry``,
  ``changes``, ``field``, ``value``, the item arrays), when an array item is not an object, or when an item's
  identity is missing or mistyped (message ``id``/``from``/``type``/``timestamp``, status
  ``id``/``status``/``timestamp``, contact ``wa_id``, ``metadata.phone_number_id`` when there are messages or
  statuses). Nothing is half-applied: a caller either gets every item or none, and a ``ParseError`` is a
  :class:`~libs.errors.PermanentError`, so the job dead-letters with the raw body kept for inspection.
* Everything else is tolerated: unknown ``changes[].field`` values (and a ``message_template_status_update``
  without a template name, language or event) are skipped and counted in ``skipped_changes``; unknown message
  types and status values are kept as sent; unknown keys are ignored; an optional field of the wrong type
  reads as absent (the untouched dict stays in ``raw``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from libs.errors import ParseError
from libs.whatsapp._json import (
    JsonObject,
    iter_objects,
    load_object,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    req_dict,
    req_list,
    req_str,
    req_timestamp,
)
from libs.whatsapp.content import meta_content, meta_context, meta_errors
from libs.whatsapp.meta_types import (
    META_MEDIA_TYPES,
    META_MESSAGES_FIELD,
    META_OBJECT,
    META_TEMPLATE_STATUS_FIELD,
    ContactInfo,
    InboundMessage,
    MetaBatch,
    MetaSystemError,
    StatusUpdate,
    TemplateStatusUpdate,
)


def meta_dedup_key(body: bytes) -> str:
    """Return the SHA-256 hex digest of a raw webhook body (a key to drop byte-identical redeliveries)."""
    return hashlib.sha256(body).hexdigest()


def parse_meta_webhook(payload: bytes | dict[str, Any]) -> MetaBatch:
    """Parse a Meta webhook (raw JSON bytes or an already decoded dict) into a :class:`MetaBatch`.

    Raises :class:`~libs.errors.ParseError` for invalid JSON or UTF-8, a non-object top level, nesting deeper
    than ``MAX_DEPTH``, an ``object`` other than ``whatsapp_business_account``, or a structural/identity
    problem in any item (see the module docstring). Never raises any other exception for JSON-like input.
    """
    data = load_object(payload)
    if data.get("object") != META_OBJECT:
        raise ParseError(f"expected {META_OBJECT!r}, got {str(data.get('object'))[:40]!r}", path="object")
    acc = _Accumulator()
    for entry_path, entry in iter_objects(req_list(data, "entry", "entry"), "entry"):
        waba_id = req_str(entry, "id", f"{entry_path}.id")
        changes_path = f"{entry_path}.changes"
        for change_path, change in iter_objects(req_list(entry, "changes", changes_path), changes_path):
            kind = req_str(change, "field", f"{change_path}.field")
            value_path = f"{change_path}.value"
            if kind == META_TEMPLATE_STATUS_FIELD:
                update = _parse_template_status(opt_dict(change, "value"), waba_id)
                if update is not None:
                    acc.template_statuses.append(update)
                    continue
            if kind != META_MESSAGES_FIELD:
                acc.skipped_changes += 1
                continue
            _parse_value(req_dict(change, "value", value_path), value_path, waba_id, acc)
    return MetaBatch(
        inbound=tuple(acc.inbound),
        statuses=tuple(acc.statuses),
        contacts=tuple(acc.contacts),
        system_errors=tuple(acc.system_errors),
        template_statuses=tuple(acc.template_statuses),
        skipped_changes=acc.skipped_changes,
    )


class _Accumulator:
    """Mutable lists filled while walking the payload, frozen into a :class:`MetaBatch` at the end."""

    __slots__ = ("contacts", "inbound", "skipped_changes", "statuses", "system_errors", "template_statuses")

    def __init__(self) -> None:
        self.inbound: list[InboundMessage] = []
        self.statuses: list[StatusUpdate] = []
        self.contacts: list[ContactInfo] = []
        self.system_errors: list[MetaSystemError] = []
        self.template_statuses: list[TemplateStatusUpdate] = []
        self.skipped_changes = 0


def _parse_value(value: JsonObject, path: str, waba_id: str, acc: _Accumulator) -> None:
    """Read one ``changes[].value`` of field ``messages`` into ``acc``."""
    messages = req_list(value, "messages", f"{path}.messages", missing_ok=True)
    statuses = req_list(value, "statuses", f"{path}.statuses", missing_ok=True)
    contacts = req_list(value, "contacts", f"{path}.contacts", missing_ok=True)
    errors = req_list(value, "errors", f"{path}.errors", missing_ok=True)

    phone_number_id = opt_str(opt_dict(value, "metadata"), "phone_number_id")

    names: dict[str, str] = {}
    for contact_path, contact in iter_objects(contacts, f"{path}.contacts"):
        wa_id = req_str(contact, "wa_id", f"{contact_path}.wa_id")
        name = opt_str(opt_dict(contact, "profile"), "name")
        if name is not None:
            names.setdefault(wa_id, name)
        acc.contacts.append(
            ContactInfo(waba_id=waba_id, phone_number_id=phone_number_id, wa_id=wa_id, name=name, raw=contact)
        )

    if messages or statuses:
        # Routing needs our number's id: without it the items cannot be attributed to a connection.
        metadata = req_dict(value, "metadata", f"{path}.metadata")
        number_id = req_str(metadata, "phone_number_id", f"{path}.metadata.phone_number_id")
        display = opt_str(metadata, "display_phone_number")
        for message_path, message in iter_objects(messages, f"{path}.messages"):
            acc.inbound.append(_parse_message(message, message_path, waba_id, number_id, display, names))
        for status_path, status in iter_objects(statuses, f"{path}.statuses"):
            acc.statuses.append(_parse_status(status, status_path, waba_id, number_id))

    for _, error in iter_objects(errors, f"{path}.errors"):
        acc.system_errors.append(
            MetaSystemError(
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                code=opt_int(error, "code"),
                title=opt_str(error, "title"),
                message=opt_str(error, "message"),
                details=opt_str(opt_dict(error, "error_data"), "details"),
                href=opt_str(error, "href"),
                raw=error,
            )
        )


def _parse_message(
    message: JsonObject,
    path: str,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str | None,
    names: dict[str, str],
) -> InboundMessage:
    """Build an :class:`InboundMessage` from one ``messages[]`` item."""
    wamid = req_str(message, "id", f"{path}.id")
    from_wa_id = req_str(message, "from", f"{path}.from")
    msg_type = req_str(message, "type", f"{path}.type")
    timestamp = req_timestamp(message, "timestamp", f"{path}.timestamp")
    context = opt_dict(message, "context")
    content = _content(msg_type, opt_dict(message, msg_type))  # type object: message["text"], …
    return InboundMessage(
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
        wamid=wamid,
        from_wa_id=from_wa_id,
        timestamp=timestamp,
        type=msg_type,
        contact_name=names.get(from_wa_id),
        context_wamid=opt_str(context, "id"),
        context_from=opt_str(context, "from"),
        text=content.text,
        media_id=content.media_id,
        mime_type=content.mime_type,
        reply_id=content.reply_id,
        reaction_to=content.reaction_to,
        reaction_removed=content.reaction_removed,
        content=meta_content(msg_type, message),
        context=meta_context(message),
        errors=meta_errors(message),
        referral=opt_dict(message, "referral"),
        raw=message,
    )


@dataclass(frozen=True, slots=True)
class _Content:
    """The normalised part of a message's type object."""

    text: str | None = None
    media_id: str | None = None
    mime_type: str | None = None
    reply_id: str | None = None
    reaction_to: str | None = None
    reaction_removed: bool = False


def _content(msg_type: str, body: JsonObject | None) -> _Content:
    """Normalise the type object of a message (``message[type]``); unknown types yield no content."""
    if msg_type in ("text", "system"):
        return _Content(text=opt_str(body, "body"))
    if msg_type in META_MEDIA_TYPES:
        return _Content(
            text=opt_str(body, "caption"), media_id=opt_str(body, "id"), mime_type=opt_str(body, "mime_type")
        )
    if msg_type == "interactive":
        kind = opt_str(body, "type")
        reply = opt_dict(body, kind) if kind is not None else None  # button_reply, list_reply, …
        return _Content(text=opt_str(reply, "title"), reply_id=opt_str(reply, "id"))
    if msg_type == "button":
        return _Content(text=opt_str(body, "text"), reply_id=opt_str(body, "payload"))
    if msg_type == "reaction":
        emoji = opt_str(body, "emoji") or None  # absent (or empty) emoji = reaction removed
        return _Content(text=emoji, reaction_to=opt_str(body, "message_id"), reaction_removed=emoji is None)
    return _Content()


def _parse_template_status(value: JsonObject | None, waba_id: str) -> TemplateStatusUpdate | None:
    """Build a :class:`TemplateStatusUpdate` from a ``message_template_status_update`` value; ``None`` (the change
    is skipped and counted, never failing the batch's messages) without an event, a name or a language."""
    event = opt_str(value, "event")
    name = opt_str(value, "message_template_name")
    language = opt_str(value, "message_template_language")
    if value is None or not event or not name or not language:
        return None
    template_id = value.get("message_template_id")
    reason = opt_str(value, "reason")
    if reason is None or reason.upper() == "NONE":
        reason = opt_str(opt_dict(value, "other_info"), "title") or opt_str(opt_dict(value, "rejection_info"), "reason")
    return TemplateStatusUpdate(
        waba_id=waba_id,
        event=event.upper(),
        name=name,
        language=language,
        template_id=str(template_id)
        if isinstance(template_id, (int, str)) and not isinstance(template_id, bool)
        else None,
        category=opt_str(value, "message_template_category"),
        reason=reason,
        raw=value,
    )


def _parse_status(status: JsonObject, path: str, waba_id: str, phone_number_id: str) -> StatusUpdate:
    """Build a :class:`StatusUpdate` from one ``statuses[]`` item."""
    errors = status.get("errors")
    first_error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None
    pricing = opt_dict(status, "pricing")
    return StatusUpdate(
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        wamid=req_str(status, "id", f"{path}.id"),
        status=req_str(status, "status", f"{path}.status"),
        timestamp=req_timestamp(status, "timestamp", f"{path}.timestamp"),
        recipient_id=opt_str(status, "recipient_id"),
        error_code=opt_int(first_error, "code"),
        error_title=opt_str(first_error, "title"),
        error_message=opt_str(first_error, "message"),
        error_details=opt_str(opt_dict(first_error, "error_data"), "details"),
        pricing_category=opt_str(pricing, "category"),
        pricing_model=opt_str(pricing, "pricing_model"),
        billable=opt_bool(pricing, "billable"),
        conversation_id=opt_str(opt_dict(status, "conversation"), "id"),
        biz_opaque_callback_data=opt_str(status, "biz_opaque_callback_data"),
        raw=status,
    )
