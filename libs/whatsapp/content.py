"""The structured content of an inbound message of each kind, one shape for both providers (pure, lenient).

Every parser result carries ``content``: a small dict with the kind's fields under zapq's names, so a CRM reads
an image, a location or a list reply the same way whether it came from Meta or from an Evolution bridge::

    kind          content
    image, video  {kind, id?, url?, mime_type?, sha256?, caption?, size?}
    audio         {kind, id?, url?, mime_type?, sha256?, voice?, seconds?}
    document      {kind, id?, url?, mime_type?, sha256?, caption?, filename?, size?}
    sticker       {kind, id?, url?, mime_type?, sha256?, animated?}
    location      {kind, latitude, longitude, name?, address?, url?}
    contacts      {kind, contacts: [{name, phones: [{phone, wa_id?, type?}], …}]}
    button_reply  {kind, id, title}        (interactive reply buttons; Evolution buttonsResponseMessage)
    list_reply    {kind, id, title, description?}
    button        {kind, payload, text}    (a template's quick-reply button)
    reaction      {kind, message_id, emoji?}  (no emoji: removed)
    system        {kind, body?, wa_id?, type?}
    unsupported   {kind}                    (Meta's ``errors`` are kept beside it)

Only values of the right JSON type are kept (a wrong-typed field reads as absent; ``raw`` keeps everything).
"""

from __future__ import annotations

import re
from typing import Any

from libs.whatsapp._json import JsonObject, opt_bool, opt_dict, opt_int, opt_str

MEDIA = ("image", "video", "audio", "document", "sticker")


def _num(obj: object, key: str) -> float | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _size(obj: object, key: str) -> int | None:
    """A size sent as a number or a decimal string (Meta's ``file_size``, Baileys' ``fileLength``)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return opt_int(obj, key)


# -- Meta --------------------------------------------------------------------------------------------------


def meta_content(msg_type: str, message: JsonObject) -> dict[str, Any] | None:
    """The structured content of a Meta ``messages[]`` item of type ``msg_type`` (``None`` for text)."""
    body = opt_dict(message, msg_type)
    if msg_type in MEDIA:
        return _clean(
            {
                "kind": msg_type,
                "id": opt_str(body, "id"),
                "url": opt_str(body, "url"),
                "mime_type": opt_str(body, "mime_type"),
                "sha256": opt_str(body, "sha256"),
                "caption": opt_str(body, "caption"),
                "filename": opt_str(body, "filename"),
                "voice": opt_bool(body, "voice"),
                "animated": opt_bool(body, "animated"),
                "size": _size(body, "file_size"),
            }
        )
    if msg_type == "location":
        return _clean(
            {
                "kind": "location",
                "latitude": _num(body, "latitude"),
                "longitude": _num(body, "longitude"),
                "name": opt_str(body, "name"),
                "address": opt_str(body, "address"),
                "url": opt_str(body, "url"),
            }
        )
    if msg_type == "contacts":
        cards = message.get("contacts")
        return {
            "kind": "contacts",
            "contacts": [c for c in cards if isinstance(c, dict)] if isinstance(cards, list) else [],
        }
    if msg_type == "interactive":
        reply_type = opt_str(body, "type") or "interactive"
        reply = opt_dict(body, reply_type)
        return _clean(
            {
                "kind": reply_type,
                "id": opt_str(reply, "id"),
                "title": opt_str(reply, "title"),
                "description": opt_str(reply, "description"),
                "response_json": opt_str(reply, "response_json"),  # nfm_reply (flows)
            }
        )
    if msg_type == "button":
        return _clean({"kind": "button", "payload": opt_str(body, "payload"), "text": opt_str(body, "text")})
    if msg_type == "reaction":
        return _clean(
            {"kind": "reaction", "message_id": opt_str(body, "message_id"), "emoji": opt_str(body, "emoji") or None}
        )
    if msg_type == "system":
        return _clean({"kind": "system", "body": opt_str(body, "body"), "wa_id": opt_str(body, "wa_id"),
                       "type": opt_str(body, "type")})  # fmt: skip
    if msg_type == "text":
        return None
    return {"kind": msg_type}


def meta_context(message: JsonObject) -> dict[str, Any] | None:
    """``context`` of a Meta message: ``{message_id?, from?, forwarded, frequently_forwarded,
    referred_product?}``; ``None`` when it has none."""
    context = opt_dict(message, "context")
    if context is None:
        return None
    frequently = opt_bool(context, "frequently_forwarded") is True
    return _clean(
        {
            "message_id": opt_str(context, "id"),
            "from": opt_str(context, "from"),
            "forwarded": frequently or opt_bool(context, "forwarded") is True,
            "frequently_forwarded": frequently,
            "referred_product": opt_dict(context, "referred_product"),
        }
    )


def meta_errors(message: JsonObject) -> list[dict[str, Any]] | None:
    """A message's ``errors`` (``unsupported`` items), each ``{code, title, details}``; ``None`` when none."""
    errors = message.get("errors")
    if not isinstance(errors, list):
        return None
    out = [
        _clean({"code": opt_int(e, "code"), "title": opt_str(e, "title") or opt_str(e, "message"),
                "details": opt_str(opt_dict(e, "error_data"), "details")})
        for e in errors
        if isinstance(e, dict)
    ]  # fmt: skip
    return out or None


# -- Evolution (Baileys) -----------------------------------------------------------------------------------

#: Baileys media message → zapq kind.
BAILEYS_MEDIA = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
_VCARD_TEL = re.compile(r"^TEL(?:[^:\n]*?waid=(\d+))?[^:\n]*:(.+)$", re.MULTILINE)


def _vcard_contact(card: object) -> dict[str, Any] | None:
    """``{name: {formatted_name}, phones: [{phone, wa_id?}]}`` of a Baileys ``contactMessage``."""
    if not isinstance(card, dict):
        return None
    vcard: str = opt_str(card, "vcard") or ""
    phones = [_clean({"phone": phone.strip(), "wa_id": wa_id or None}) for wa_id, phone in _VCARD_TEL.findall(vcard)]
    name = opt_str(card, "displayName")
    return {"name": {"formatted_name": name or ""}, "phones": phones, "vcard": vcard}


def baileys_content(message: JsonObject | None) -> dict[str, Any] | None:
    """The structured content of a Baileys message object (already unwrapped); ``None`` for plain text."""
    if message is None:
        return None
    for key, kind in BAILEYS_MEDIA.items():
        media = opt_dict(message, key)
        if media is not None:
            return _clean(
                {
                    "kind": kind,
                    "url": opt_str(media, "url"),
                    "mime_type": opt_str(media, "mimetype"),
                    "sha256": opt_str(media, "fileSha256"),
                    "caption": opt_str(media, "caption"),
                    "filename": opt_str(media, "fileName"),
                    "voice": opt_bool(media, "ptt"),
                    "seconds": opt_int(media, "seconds"),
                    "animated": opt_bool(media, "isAnimated"),
                    "size": _size(media, "fileLength"),
                }
            )
    if (location := opt_dict(message, "locationMessage") or opt_dict(message, "liveLocationMessage")) is not None:
        return _clean(
            {
                "kind": "location",
                "latitude": _num(location, "degreesLatitude"),
                "longitude": _num(location, "degreesLongitude"),
                "name": opt_str(location, "name"),
                "address": opt_str(location, "address"),
                "url": opt_str(location, "url"),
            }
        )
    if (single := opt_dict(message, "contactMessage")) is not None:
        return {"kind": "contacts", "contacts": [c for c in [_vcard_contact(single)] if c]}
    if (many := opt_dict(message, "contactsArrayMessage")) is not None:
        listed_cards = many.get("contacts")
        cards: list[Any] = listed_cards if isinstance(listed_cards, list) else []
        return {"kind": "contacts", "contacts": [c for c in map(_vcard_contact, cards) if c]}
    if (buttons := opt_dict(message, "buttonsResponseMessage")) is not None:
        return _clean({"kind": "button_reply", "id": opt_str(buttons, "selectedButtonId"),
                       "title": opt_str(buttons, "selectedDisplayText")})  # fmt: skip
    if (listed := opt_dict(message, "listResponseMessage")) is not None:
        return _clean({"kind": "list_reply", "id": opt_str(opt_dict(listed, "singleSelectReply"), "selectedRowId"),
                       "title": opt_str(listed, "title"), "description": opt_str(listed, "description")})  # fmt: skip
    if (template := opt_dict(message, "templateButtonReplyMessage")) is not None:
        return _clean({"kind": "button", "payload": opt_str(template, "selectedId"),
                       "text": opt_str(template, "selectedDisplayText")})  # fmt: skip
    if (reaction := opt_dict(message, "reactionMessage")) is not None:
        return _clean({"kind": "reaction", "message_id": opt_str(opt_dict(reaction, "key"), "id"),
                       "emoji": opt_str(reaction, "text") or None})  # fmt: skip
    if opt_str(message, "conversation") is not None or opt_dict(message, "extendedTextMessage") is not None:
        return None
    other = next((k for k, v in message.items() if isinstance(v, dict) and k != "messageContextInfo"), None)
    return {"kind": other} if other is not None else None


def baileys_context(item: JsonObject, message: JsonObject | None) -> dict[str, Any] | None:
    """``{message_id?, from?, forwarded, frequently_forwarded}`` from a Baileys ``contextInfo`` (on the item or
    on the content message's type object); ``None`` when there is none."""
    info = opt_dict(item, "contextInfo")
    if info is None and message is not None:
        info = next((c for v in message.values() if (c := opt_dict(v, "contextInfo")) is not None), None)
    if info is None:
        return None
    score = opt_int(info, "forwardingScore") or 0
    forwarded = opt_bool(info, "isForwarded") is True or score > 0
    context = _clean(
        {
            "message_id": opt_str(info, "stanzaId"),
            "from": opt_str(info, "participant"),
            "forwarded": forwarded,
            "frequently_forwarded": score > 4,
        }
    )
    return context if context.get("message_id") or forwarded else None
