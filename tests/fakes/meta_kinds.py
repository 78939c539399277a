"""Every message kind on the fake Meta's wire: checks of outbound bodies, and inbound webhook builders.

Outbound (``whatsapp-more.md`` section 1, Meta's OpenAPI): :func:`validate_kind` says why a send of a kind
other than text/template is not what Meta documents (the fake answers 400, code 100), or ``None``. Inbound
(section 3, protocols A3): :func:`inbound_webhook` wraps one ``messages[]`` item built by the ``*_message``
builders into a signed-ready webhook body.
"""

from __future__ import annotations

from typing import Any

MEDIA = ("image", "video", "audio", "document", "sticker")
CAPTIONED = ("image", "video", "document")


def _str(value: object, limit: int | None = None) -> bool:
    return isinstance(value, str) and bool(value.strip()) and (limit is None or len(value) <= limit)


def _media(obj: object, where: str, *, caption: bool, extra: tuple[str, ...] = ()) -> str | None:
    if not isinstance(obj, dict):
        return f"{where} must be an object"
    if ("id" in obj) == ("link" in obj):
        return f"{where} needs exactly one of id or link"
    if "link" in obj and not (isinstance(obj["link"], str) and obj["link"].startswith(("http://", "https://"))):
        return f"{where}.link must be an http(s) URL"
    if "id" in obj and not _str(obj["id"]):
        return f"{where}.id must be a media id"
    allowed = {"id", "link", *extra, *(("caption",) if caption else ())}
    if unknown := set(obj) - allowed:
        return f"{where} does not take {sorted(unknown)}"
    if "caption" in obj and not _str(obj["caption"], 1024):
        return f"{where}.caption must be 1 to 1024 characters"
    return None


def _header(header: object, *, text_only: bool) -> str | None:
    if header is None:
        return None
    if not isinstance(header, dict) or header.get("type") not in ("text", "image", "video", "document"):
        return "interactive.header.type must be text, image, video or document"
    kind = header["type"]
    if text_only and kind != "text":
        return "a list header is text only"
    if kind == "text":
        return None if _str(header.get("text"), 60) else "interactive.header.text must be 1 to 60 characters"
    return _media(header.get(kind), f"interactive.header.{kind}", caption=False, extra=("filename",))


def _interactive(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return "interactive must be an object"
    kind = obj.get("type")
    body = obj.get("body")
    body_limit = 4096 if kind == "list" else 1024
    if not isinstance(body, dict) or not _str(body.get("text"), body_limit):
        return f"interactive.body.text must be 1 to {body_limit} characters"
    footer = obj.get("footer")
    if footer is not None and not (isinstance(footer, dict) and _str(footer.get("text"), 60)):
        return "interactive.footer.text must be 1 to 60 characters"
    if problem := _header(obj.get("header"), text_only=kind == "list"):
        return problem
    action = obj.get("action")
    if not isinstance(action, dict):
        return "interactive.action is required"
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "interactive.action.buttons must hold 1 to 3 buttons"
        titles = []
        for button in buttons:
            reply = button.get("reply") if isinstance(button, dict) else None
            if button.get("type") != "reply" or not isinstance(reply, dict):
                return "each button is {type: reply, reply: {id, title}}"
            if not _str(reply.get("id"), 256) or not _str(reply.get("title"), 20):
                return "a button's reply.id is 1 to 256 and its title 1 to 20 characters"
            titles.append(reply["title"])
        return None if len(set(titles)) == len(titles) else "button titles must be unique"
    if kind == "list":
        sections = action.get("sections")
        if not _str(action.get("button"), 20):
            return "interactive.action.button must be 1 to 20 characters"
        if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
            return "interactive.action.sections must hold 1 to 10 sections"
        rows = [row for section in sections for row in (section.get("rows") or [])]
        if not 1 <= len(rows) <= 10:
            return "a list holds 1 to 10 rows in all"
        for row in rows:
            if not _str(row.get("id"), 200) or not _str(row.get("title"), 24):
                return "a row's id is 1 to 200 and its title 1 to 24 characters"
            if "description" in row and not _str(row["description"], 72):
                return "a row's description is 1 to 72 characters"
        if len(sections) > 1 and not all(_str(s.get("title"), 24) for s in sections):
            return "each section needs a title (1 to 24) when there are several"
        return None
    if kind == "cta_url":
        params = action.get("parameters")
        if action.get("name") != "cta_url" or not isinstance(params, dict):
            return "interactive.action is {name: cta_url, parameters: {display_text, url}}"
        if not _str(params.get("display_text"), 20):
            return "display_text must be 1 to 20 characters"
        url = params.get("url")
        return None if isinstance(url, str) and url.startswith(("http://", "https://")) else "url must be http(s)"
    return f"interactive type {kind!r} is not supported by the fake"


def _contacts(cards: object) -> str | None:
    if not isinstance(cards, list) or not cards:
        return "contacts must be a non-empty list"
    for card in cards:
        name = card.get("name") if isinstance(card, dict) else None
        if not isinstance(name, dict) or not _str(name.get("formatted_name")):
            return "each contact needs name.formatted_name"
        for phone in card.get("phones") or []:
            if not isinstance(phone, dict) or not _str(phone.get("phone")):
                return "each contact phone needs phone"
    return None


def _template_component(component: object) -> str | None:
    if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
        return "a template component's type is header, body or button"
    params = component.get("parameters")
    if not isinstance(params, list):
        return "template component parameters must be a list"
    if component["type"] == "button":
        if component.get("sub_type") not in ("quick_reply", "url") or not isinstance(component.get("index"), str):
            return "a button component needs sub_type quick_reply|url and a string index"
        wanted = "payload" if component["sub_type"] == "quick_reply" else "text"
        if len(params) != 1 or params[0].get("type") != wanted or not _str(params[0].get(wanted)):
            return f"a {component['sub_type']} button takes one {wanted} parameter"
        return None
    for param in params:
        kind = param.get("type") if isinstance(param, dict) else None
        if kind == "text":
            limit = 60 if component["type"] == "header" else 1024
            if not _str(param.get("text"), limit):
                return f"a {component['type']} text parameter is 1 to {limit} characters"
        elif kind in ("image", "video", "document") and component["type"] == "header":
            if problem := _media(param.get(kind), f"header {kind}", caption=False, extra=("filename",)):
                return problem
        elif kind not in ("currency", "date_time") or component["type"] != "body":
            return f"parameter type {kind!r} does not go in a {component['type']}"
    return None


def validate_template_components(components: object) -> str | None:
    """Why a template's ``components`` are not Meta's shape, or ``None``."""
    if not isinstance(components, list):
        return "template.components must be a list"
    for component in components:
        if problem := _template_component(component):
            return problem
    return None


def validate_kind(kind: object, payload: dict[str, Any]) -> str | None:
    """Why ``payload`` is not an acceptable send of ``kind`` (not text or template), or ``None`` when it is."""
    obj = payload.get(kind) if isinstance(kind, str) else None
    if isinstance(kind, str) and kind in MEDIA:
        extra: tuple[str, ...] = {"document": ("filename",), "audio": ("voice",)}.get(kind, ())
        return _media(obj, kind, caption=kind in CAPTIONED, extra=extra)
    if kind == "interactive":
        return _interactive(obj)
    if kind == "location":
        if not isinstance(obj, dict):
            return "location must be an object"
        lat, lng = obj.get("latitude"), obj.get("longitude")
        if not (
            isinstance(lat, int | float) and -90 <= lat <= 90 and isinstance(lng, int | float) and -180 <= lng <= 180
        ):
            return "location.latitude and longitude must be numbers in range"
        return None
    if kind == "contacts":
        return _contacts(obj)
    if kind == "reaction":
        if not isinstance(obj, dict) or not _str(obj.get("message_id")) or not isinstance(obj.get("emoji"), str):
            return "reaction needs message_id and emoji"
        if "context" in payload:
            return "a reaction takes no context"
        return None
    return f"message type {kind!r} is not supported by the fake"


# -- inbound webhooks ---------------------------------------------------------------------------------------


def inbound_webhook(
    message: dict[str, Any],
    *,
    phone_number_id: str = "106540352242922",
    waba_id: str = "102290129340398",
    name: str = "Ana",
) -> dict[str, Any]:
    """A webhook body carrying one inbound ``messages[]`` item (and its sender's contact)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": name}, "wa_id": message["from"]}],
        "messages": [message],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    }


def _item(kind: str, wamid: str, sender: str, body: Any, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"from": sender, "id": wamid, "timestamp": "1749416383", "type": kind, **extra}
    if body is not None:
        item[kind] = body
    return item


def image_message(wamid: str, sender: str, *, caption: str | None = "look") -> dict[str, Any]:
    body = {"mime_type": "image/jpeg", "sha256": "c2hhMjU2", "id": "1013859600285441"}
    return _item("image", wamid, sender, {**body, **({"caption": caption} if caption else {})})


def audio_message(wamid: str, sender: str) -> dict[str, Any]:
    body = {"mime_type": "audio/ogg; codecs=opus", "sha256": "YXVkaW8=", "id": "2013859600285442", "voice": True}
    return _item("audio", wamid, sender, body)


def document_message(wamid: str, sender: str) -> dict[str, Any]:
    body = {"caption": "invoice", "filename": "inv.pdf", "mime_type": "application/pdf", "sha256": "ZG9j", "id": "301"}
    return _item("document", wamid, sender, body)


def sticker_message(wamid: str, sender: str) -> dict[str, Any]:
    body = {"mime_type": "image/webp", "sha256": "c3RpY2s=", "id": "401", "animated": False}
    return _item("sticker", wamid, sender, body)


def video_message(wamid: str, sender: str) -> dict[str, Any]:
    return _item("video", wamid, sender, {"mime_type": "video/mp4", "sha256": "dmlk", "id": "501", "caption": "clip"})


def button_reply_message(wamid: str, sender: str, replied_to: str) -> dict[str, Any]:
    body = {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}
    return _item("interactive", wamid, sender, body, context={"from": "15550783881", "id": replied_to})


def list_reply_message(wamid: str, sender: str, replied_to: str) -> dict[str, Any]:
    body = {"type": "list_reply", "list_reply": {"id": "priority_express", "title": "Express", "description": "1 day"}}
    return _item("interactive", wamid, sender, body, context={"from": "15550783881", "id": replied_to})


def template_button_message(wamid: str, sender: str, template_wamid: str) -> dict[str, Any]:
    body = {"payload": "STOP_PROMO", "text": "Stop promotions"}
    return _item("button", wamid, sender, body, context={"from": "15550783881", "id": template_wamid})


def location_message(wamid: str, sender: str) -> dict[str, Any]:
    body = {"latitude": 37.758056, "longitude": -122.425332, "name": "HQ", "address": "1 Hacker Way"}
    return _item("location", wamid, sender, body)


def contacts_message(wamid: str, sender: str) -> dict[str, Any]:
    cards = [{"name": {"formatted_name": "John Smith", "first_name": "John"},
              "phones": [{"phone": "+1 650 555 1234", "type": "WORK", "wa_id": "16505551234"}]}]  # fmt: skip
    return _item("contacts", wamid, sender, cards)


def reaction_message(wamid: str, sender: str, target: str, emoji: str | None = "👍") -> dict[str, Any]:
    body: dict[str, Any] = {"message_id": target}
    if emoji is not None:
        body["emoji"] = emoji
    return _item("reaction", wamid, sender, body)


def forwarded_text_message(wamid: str, sender: str, *, frequently: bool = False) -> dict[str, Any]:
    context = {"frequently_forwarded": True} if frequently else {"forwarded": True}
    return _item("text", wamid, sender, {"body": "fwd"}, context=context)


def unsupported_message(wamid: str, sender: str) -> dict[str, Any]:
    errors = [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
               "error_data": {"details": "Message type is currently not supported."}}]  # fmt: skip
    return _item("unsupported", wamid, sender, None, errors=errors)


#: Builders of every inbound kind taking (wamid, sender) only.
SIMPLE_BUILDERS = {
    "image": image_message,
    "video": video_message,
    "audio": audio_message,
    "document": document_message,
    "sticker": sticker_message,
    "location": location_message,
    "contacts": contacts_message,
    "unsupported": unsupported_message,
}
