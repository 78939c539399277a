"""Evolution API v2 request of each message kind (``whatsapp-more.md`` section 6), from the kind's content in
Meta's shape (:class:`~libs.providers.base.OutboundContent`). Pure: no I/O.

    kind                        endpoint                          body
    image, video, document      /message/sendMedia                {number, mediatype, media, caption?, fileName?}
    audio (voice: true)         /message/sendWhatsAppAudio        {number, audio}  (sent as a voice note)
    audio                       /message/sendMedia                {number, mediatype: "audio", media}
    sticker                     /message/sendSticker              {number, sticker}
    location                    /message/sendLocation             {number, latitude, longitude, name, address}
    contacts                    /message/sendContact              {number, contact: [{fullName, phoneNumber, …}]}
    reaction                    /message/sendReaction             {key: {remoteJid, fromMe, id}, reaction}
    interactive button, cta_url /message/sendButtons              {number, title, description?, footer?, buttons}
    interactive list            /message/sendList                 {number, title, description?, footerText,
                                                                   buttonText, sections}

``media`` is the reference's ``link`` (or, once resolved by :mod:`libs.sending.media_ref`, its ``id``); a reply
quotes the original with ``quoted.key.id`` as text does. A reaction's key says whether its target is one of ours
(``fromMe``): the API looks the target up among the connection's messages when the reaction is created
(``target_from_me``; a target zapq does not have is taken as the customer's).
"""

from __future__ import annotations

from typing import Any

from libs.errors import ProviderPermanentError
from libs.messages import kinds
from libs.providers.base import OutboundContent

PROVIDER = "baileys"


def _jid(number: str) -> str:
    return f"{number.lstrip('+')}@s.whatsapp.net"


def _media(ref: dict[str, Any]) -> str:
    return str(ref.get("link") or ref.get("id") or "")


def _text(part: Any) -> str | None:
    return part.get("text") if isinstance(part, dict) else None


def _media_body(message: OutboundContent, number: str) -> tuple[str, dict[str, Any]]:
    ref: dict[str, Any] = message.content
    if message.kind == kinds.AUDIO and ref.get("voice"):
        return "sendWhatsAppAudio", {"number": number, "audio": _media(ref)}
    if message.kind == kinds.STICKER:
        return "sendSticker", {"number": number, "sticker": _media(ref)}
    body: dict[str, Any] = {"number": number, "mediatype": message.kind, "media": _media(ref)}
    if ref.get("caption"):
        body["caption"] = ref["caption"]
    if ref.get("filename"):
        body["fileName"] = ref["filename"]
    return "sendMedia", body


def _contact(card: dict[str, Any]) -> dict[str, Any]:
    phone = (card.get("phones") or [{}])[0]
    out: dict[str, Any] = {"fullName": card["name"]["formatted_name"], "phoneNumber": phone.get("phone", "")}
    if phone.get("wa_id"):
        out["wuid"] = phone["wa_id"]
    if (org := card.get("org")) and org.get("company"):
        out["organization"] = org["company"]
    if card.get("emails"):
        out["email"] = card["emails"][0]["email"]
    if card.get("urls"):
        out["url"] = card["urls"][0]["url"]
    return out


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {"title": row["title"], "rowId": row["id"]}
    if row.get("description"):
        out["description"] = row["description"]
    return out


def _interactive(content: dict[str, Any], number: str) -> tuple[str, dict[str, Any]]:
    header, body, footer = _text(content.get("header")), _text(content.get("body")) or "", _text(content.get("footer"))
    action = content.get("action") or {}
    if content.get("type") == "list":
        sections = [
            {
                "title": section.get("title") or "",
                "rows": [
                    {
                        "title": row["title"],
                        "rowId": row["id"],
                        **({"description": d} if (d := row.get("description")) else {}),
                    }
                    for row in section["rows"]
                ],
            }
            for section in action["sections"]
        ]
        out = {"number": number, "title": header or body, "footerText": footer or "", "buttonText": action["button"]}
        if header:
            out["description"] = body
        return "sendList", {**out, "sections": sections}
    if content.get("type") == "cta_url":
        params = action["parameters"]
        buttons = [{"type": "url", "displayText": params["display_text"], "url": params["url"]}]
    else:
        buttons = [
            {"type": "reply", "displayText": b["reply"]["title"], "id": b["reply"]["id"]} for b in action["buttons"]
        ]
    out = {"number": number, "title": header or body, "buttons": buttons}
    if header:
        out["description"] = body
    if footer:
        out["footer"] = footer
    return "sendButtons", out


def bridge_request(message: OutboundContent) -> tuple[str, dict[str, Any]]:
    """``(endpoint, body)`` of ``message`` on an Evolution bridge (the module docstring's table); a kind the
    bridge cannot send (refused by the API before, so only a stored row from elsewhere) is a
    ``ProviderPermanentError`` before any request."""
    number = message.to.lstrip("+")
    content = message.content
    if (why := kinds.bridge_refusal(message.kind, content)) is not None:
        raise ProviderPermanentError(why, provider=PROVIDER)
    if message.kind in kinds.MEDIA_KINDS:
        endpoint, body = _media_body(message, number)
    elif message.kind == kinds.LOCATION:
        endpoint = "sendLocation"
        body = {
            "number": number,
            "latitude": content["latitude"],
            "longitude": content["longitude"],
            "name": content.get("name") or "",
            "address": content.get("address") or "",
        }
    elif message.kind == kinds.CONTACTS:
        endpoint, body = "sendContact", {"number": number, "contact": [_contact(card) for card in content]}
    elif message.kind == kinds.REACTION:
        key = {"remoteJid": _jid(number), "fromMe": message.target_from_me, "id": content["message_id"]}
        return "sendReaction", {"key": key, "reaction": content.get("emoji") or ""}
    else:
        endpoint, body = _interactive(content, number)
    if message.reply_to:
        body["quoted"] = {"key": {"id": message.reply_to}}
    return endpoint, body
