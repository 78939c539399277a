"""The one seam where a message's media references are resolved just before it is sent, between sends and
:mod:`libs.media`.

A media reference (``{"id": …}`` or ``{"link": …}``, :func:`libs.messages.kinds.media_refs`) is stored as the
producer gave it; :func:`resolve_outbound` passes each one of a message through :func:`resolve_media` (the
stored payload is never changed). ``{"id": "med_…"}`` (a file uploaded to zapq, ``POST /api/media``) becomes,
for a Meta connection, Meta's own media id: the file is uploaded to ``POST /{phone-number-id}/media`` once per
connection (uploads of one file to one connection are serialised by a Postgres advisory lock) and Meta's id is
cached on the media row until it expires (30 days; reused while more than a day is left). For a Baileys bridge
it becomes the file inline (``base64``, ``mime_type``, ``filename``: Evolution's ``sendMedia`` takes raw
base64), up to :data:`BRIDGE_INLINE_MAX_BYTES`. Any other reference (a link, a provider's id) is returned
unchanged.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.media import actions, store
from libs.media.errors import MediaNotFoundError, MediaTooLargeError
from libs.media.provider import MetaMediaClient
from libs.media.storage import MediaStorage
from libs.messages import kinds
from libs.providers.base import OutboundContent, OutboundMessage, OutboundTemplate
from libs.secrets import Secrets
from libs.sending.store import Claimed

#: Meta keeps an uploaded file this long.
UPLOAD_TTL = dt.timedelta(days=30)
#: A cached Meta id is used again only while at least this much of its life is left.
REUSE_MARGIN = dt.timedelta(days=1)
#: Largest file handed to a bridge inline (its JSON API takes the file as base64, so it is read whole).
BRIDGE_INLINE_MAX_BYTES = 16 * 1024 * 1024


@dataclass
class MediaResolver:
    """What resolving a zapq media id needs (the sender's pool, HTTP client and cipher, and the storage)."""

    pool: AsyncConnectionPool[AsyncConnection[Any]]
    http: httpx.AsyncClient
    storage: MediaStorage
    secrets: Secrets
    graph_url: str
    api_version: str


def _cached(row: Mapping[str, Any], connection_id: int, now: dt.datetime) -> str | None:
    entry = (row["provider_ids"] or {}).get(str(connection_id))
    if not isinstance(entry, dict) or not entry.get("id"):
        return None
    try:
        expires = dt.datetime.fromisoformat(str(entry["expires_at"]))
    except (KeyError, ValueError):
        return None
    return str(entry["id"]) if expires - now > REUSE_MARGIN else None


async def resolve_media(
    ref: dict[str, Any], connection: Mapping[str, Any] | Claimed, *, resolver: MediaResolver | None = None
) -> dict[str, Any]:
    """``ref`` ready to send on ``connection`` (a claimed send's row: ``company_id``, ``connection_id``,
    ``provider``, ``phone_number_id``, encrypted ``access_token``); unchanged unless its ``id`` is a zapq
    media id. :class:`MediaNotFoundError` (permanent) for a media id that is not the company's or is pruned."""
    media_id = ref.get("id")
    if not actions.is_media_id(media_id):
        return ref
    if resolver is None:
        raise ValueError("a zapq media id needs a MediaResolver")
    async with resolver.pool.connection() as conn:
        row = await store.get(conn, str(media_id))
    if row is None or row["company_id"] != connection["company_id"]:
        raise MediaNotFoundError(f"no media {media_id} for company {connection['company_id']}")
    if connection["provider"] == "meta":
        return {**ref, "id": await _meta_id(resolver, row, connection)}
    return await _inline(resolver, row, ref)


async def _meta_id(resolver: MediaResolver, row: dict[str, Any], connection: Mapping[str, Any] | Claimed) -> str:
    connection_id = int(connection["connection_id"])
    cached = _cached(row, connection_id, dt.datetime.now(dt.UTC))
    if cached is not None:
        return cached
    async with resolver.pool.connection() as conn, conn.transaction():
        await store.lock_upload(conn, row["id"], connection_id)
        fresh = await store.get(conn, row["id"])
        assert fresh is not None  # rows are deleted only by the prune, long after any send
        cached = _cached(fresh, connection_id, dt.datetime.now(dt.UTC))
        if cached is not None:  # uploaded by another send while this one waited
            return cached
        client = MetaMediaClient(
            resolver.http,
            graph_url=resolver.graph_url,
            api_version=resolver.api_version,
            access_token=resolver.secrets.decrypt_optional(connection["access_token"]) or "",
        )
        provider_id = await client.upload(
            connection["phone_number_id"] or "",
            resolver.storage.read(row["storage_key"]),
            size=row["size"],
            mime_type=row["mime_type"],
            filename=row["filename"] or row["id"],
        )
        expires = dt.datetime.now(dt.UTC) + UPLOAD_TTL
        await store.cache_provider_id(conn, row["id"], connection_id, provider_id, expires)
        return provider_id


async def _inline(resolver: MediaResolver, row: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    if row["size"] > BRIDGE_INLINE_MAX_BYTES:
        raise MediaTooLargeError(f"a bridge takes files up to {BRIDGE_INLINE_MAX_BYTES} bytes inline")
    data = b"".join([chunk async for chunk in resolver.storage.read(row["storage_key"])])
    inline = {k: v for k, v in ref.items() if k != "id"}
    filename = row["filename"] or inline.get("filename")
    return {**inline, "base64": base64.b64encode(data).decode(), "mime_type": row["mime_type"], "filename": filename}


async def resolve_outbound(
    message: OutboundMessage, connection: Claimed, *, resolver: MediaResolver | None = None
) -> OutboundMessage:
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
        resolved = await resolve_media(dict(ref), connection, resolver=resolver)
        ref.clear()
        ref.update(resolved)
    if isinstance(message, OutboundContent):
        return OutboundContent(message.to, kind, content, message.reply_to, message.client_ref, message.target_from_me)
    return OutboundTemplate(
        message.to, message.name, message.language, content["components"], message.client_ref, message.reply_to
    )
