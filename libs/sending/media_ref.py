"""The one seam where a message's media references are resolved just before it is sent.

A media reference (``{"id": …}`` or ``{"link": …}``, :func:`libs.messages.kinds.media_refs`) is stored as the
producer gave it: ``id`` may be a Meta media id or a zapq media id. :func:`resolve_media` turns one reference
into what the connection's provider accepts; today it returns it unchanged (Meta ids and links go to Meta as
they are). Media storage replaces its body (a zapq id → the Meta id uploaded once per connection, or a link
the bridge can fetch); nothing else needs to change.
"""

from __future__ import annotations

import copy
from typing import Any

from libs.messages import kinds
from libs.providers.base import OutboundContent, OutboundMessage, OutboundTemplate
from libs.sending.store import Claimed


async def resolve_media(ref: dict[str, Any], connection: Claimed) -> dict[str, Any]:
    """The reference ``ref`` as the provider of ``connection`` (the claimed row: ``connection_id``,
    ``provider``, ``phone_number_id``, …) must receive it; today ``ref`` itself."""
    return ref


async def resolve_outbound(message: OutboundMessage, connection: Claimed) -> OutboundMessage:
    """``message`` with every media reference passed through :func:`resolve_media` (the stored payload is
    never changed: the content is copied when it holds any reference)."""
    if isinstance(message, OutboundContent):
        kind, content = message.kind, message.content
    elif isinstance(message, OutboundTemplate):
        kind, content = kinds.TEMPLATE, {"components": message.components}
    else:
        return message
    if next(kinds.media_refs(kind, content), None) is None:
        return message
    content = copy.deepcopy(content)
    for ref in kinds.media_refs(kind, content):
        resolved = await resolve_media(dict(ref), connection)
        ref.clear()
        ref.update(resolved)
    if isinstance(message, OutboundContent):
        return OutboundContent(message.to, kind, content, message.reply_to, message.client_ref, message.target_from_me)
    return OutboundTemplate(
        message.to, message.name, message.language, content["components"], message.client_ref, message.reply_to
    )
