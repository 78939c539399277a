"""The kinds of outbound message zapq sends, and which provider can send which (pure, no I/O).

A message row's ``type`` is its kind; its ``payload`` holds the kind's content under the kind's name, in Meta's
Cloud API wire shape (``{"image": {"link": …, "caption": …}}``), plus ``reply_to`` (the wamid / key id it
quotes) when it is a reply. Text keeps its body in ``body`` (the sender's hot path reads nothing else) and a
template its ``{"name", "language", "components"}`` under ``template``. The API validates each kind against
Meta's limits (:mod:`libs.api.kinds`), so the sender passes the stored content on unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

TEXT = "text"
TEMPLATE = "template"
IMAGE = "image"
VIDEO = "video"
AUDIO = "audio"
DOCUMENT = "document"
STICKER = "sticker"
INTERACTIVE = "interactive"
LOCATION = "location"
CONTACTS = "contacts"
REACTION = "reaction"

#: Kinds whose content is one media reference (``id`` or ``link``).
MEDIA_KINDS: frozenset[str] = frozenset({IMAGE, VIDEO, AUDIO, DOCUMENT, STICKER})
#: Every kind, in the order the API documents them.
KINDS: tuple[str, ...] = (TEXT, TEMPLATE, IMAGE, VIDEO, AUDIO, DOCUMENT, STICKER, INTERACTIVE, LOCATION, CONTACTS,
                          REACTION)  # fmt: skip
#: Kinds (and interactive sub-types) a Baileys bridge (Evolution API v2) can send: templates do not exist on
#: the WhatsApp Web protocol. Interactive messages go to ``sendButtons`` / ``sendList``, which WhatsApp renders
#: unreliably for unofficial clients (see ``whatsapp-more.md`` section 6).
BRIDGE_KINDS: frozenset[str] = frozenset(
    {TEXT, IMAGE, VIDEO, AUDIO, DOCUMENT, STICKER, INTERACTIVE, LOCATION, CONTACTS, REACTION}
)
BRIDGE_INTERACTIVE: frozenset[str] = frozenset({"button", "list", "cta_url"})


def bridge_refusal(kind: str, content: Any) -> str | None:
    """Why a Baileys bridge cannot send a message of ``kind`` with ``content``, or ``None`` when it can."""
    if kind not in BRIDGE_KINDS:
        return f"a Baileys (Evolution) connection cannot send {kind} messages; use a Meta connection"
    if kind == INTERACTIVE and isinstance(content, dict) and content.get("type") not in BRIDGE_INTERACTIVE:
        return (
            f"a Baileys (Evolution) connection cannot send interactive {content.get('type')} messages "
            f"(only {', '.join(sorted(BRIDGE_INTERACTIVE))})"
        )
    if kind == CONTACTS and isinstance(content, list):
        for index, contact in enumerate(content):
            if not (isinstance(contact, dict) and contact.get("phones")):
                return f"contacts.{index}.phones: a Baileys (Evolution) connection needs a phone for each contact"
    return None


def media_refs(kind: str, content: Any) -> Iterator[dict[str, Any]]:
    """Every media reference (a dict with ``id`` or ``link``) inside a message's content: the media of a
    media kind, an interactive message's media header, a template's media header parameters."""
    if not isinstance(content, dict):
        return
    if kind in MEDIA_KINDS:
        yield content
    elif kind == INTERACTIVE:
        header = content.get("header")
        if isinstance(header, dict) and isinstance(media := header.get(header.get("type")), dict):
            yield media
    elif kind == TEMPLATE:
        for component in content.get("components") or ():
            for parameter in component.get("parameters") or () if isinstance(component, dict) else ():
                if isinstance(parameter, dict) and parameter.get("type") in MEDIA_KINDS:
                    media = parameter.get(parameter["type"])
                    if isinstance(media, dict):
                        yield media


def summary(kind: str, content: Any) -> str | None:
    """The human-readable text of an outbound message's content (kept in ``body``: search and dashboard)."""
    if not isinstance(content, dict):
        return None
    if kind in MEDIA_KINDS:
        return content.get("caption")
    if kind == INTERACTIVE:
        body = content.get("body")
        return body.get("text") if isinstance(body, dict) else None
    if kind == LOCATION:
        return content.get("name") or content.get("address")
    if kind == REACTION:
        return content.get("emoji") or None
    return None


def media_line(kind: str, payload: Any) -> str | None:
    """A stored message's medium in one line (``https://…/a.jpg`` or ``media id 123 (audio/ogg)``): an outbound
    message's reference, or an inbound one's parsed content; ``None`` without one."""
    if not isinstance(payload, dict):
        return None
    ref = payload.get(kind) if kind in MEDIA_KINDS else payload.get("content")
    if not isinstance(ref, dict):
        return None
    link = ref.get("link") or ref.get("url")
    if isinstance(link, str):
        return link
    if isinstance(ref.get("id"), str):
        return f"media id {ref['id']}" + (f" ({ref['mime_type']})" if ref.get("mime_type") else "")
    return None
