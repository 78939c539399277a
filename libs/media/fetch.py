"""The inbound ``media`` job: fetch an inbound message's file from its provider, check it, store it, record it.

Meta: ``GET /{media-id}`` (URL valid 5 minutes, MIME type, SHA-256, size), then the URL with the connection's
token, streamed into a spool file that may not pass the declared size; the size and SHA-256 (Meta's, and the
webhook's) must match, else :class:`MediaIntegrityError` (retried by the queue's policy, which resolves a new
URL). Baileys: the bridge's base64 export of the message. The file is kept under a new ``med_…`` id (one per
message: a second run finds it and only completes the recording), then ``payload.stored_media`` is set on the
message with its ``message.media`` event — once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.errors import RecordNotFoundError
from libs.media import actions, limits, store
from libs.media.errors import MediaIntegrityError, MediaTooLargeError
from libs.media.provider import MetaMediaClient, bridge_base64
from libs.media.spool import Spool, spool
from libs.media.storage import MediaStorage
from libs.secrets import Secrets

logger = logging.getLogger(__name__)

#: Meta keeps an inbound media id this long: older files cannot be fetched any more.
MEDIA_ID_LIFETIME = dt.timedelta(days=7)
#: Messages enqueued again per sweep.
SWEEP_LIMIT = 1_000


@dataclass
class FetchContext:
    """What the media fetcher needs, opened once per worker process."""

    pool: AsyncConnectionPool[AsyncConnection[Any]]
    http: httpx.AsyncClient
    storage: MediaStorage
    secrets: Secrets
    graph_url: str
    api_version: str
    retention_days: int
    max_bytes: int
    #: The client for bridges (guarded in ``prod``); ``None``: ``http``.
    bridge_http: httpx.AsyncClient | None = None


def _item(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    raw = payload.get("raw")
    item = raw.get(kind) if isinstance(raw, dict) else None
    return item if isinstance(item, dict) else {}


def hash_matches(expected: str, digest_hex: str) -> bool:
    """Whether ``expected`` (hex, or base64 as Meta's webhooks sometimes send) is the SHA-256 ``digest_hex``."""
    expected = expected.strip()
    if expected.lower() == digest_hex:
        return True
    try:
        return base64.b64decode(expected, validate=True).hex() == digest_hex
    except (binascii.Error, ValueError):
        return False


def check(target: Spool, *, size: int | None, hashes: list[str]) -> None:
    """:class:`MediaIntegrityError` unless the spooled file has the declared size and every declared hash."""
    if size is not None and target.size != size:
        raise MediaIntegrityError(f"downloaded {target.size} bytes, the provider declared {size}")
    for expected in hashes:
        if not hash_matches(expected, target.sha256):
            raise MediaIntegrityError("the downloaded file's SHA-256 differs from the provider's")


async def fetch_inbound(ctx: FetchContext, message_id: int) -> str | None:
    """Fetch and keep the file of inbound message ``message_id``; its ``med_…`` id (``None``: the message has
    no file to fetch). Safe to run twice: a stored file is found and only its recording completed."""
    async with ctx.pool.connection() as conn:
        message = await store.message_for_fetch(conn, message_id)
        if message is None:
            raise RecordNotFoundError(f"message {message_id} does not exist")
        row = await store.by_message(conn, message_id)
    if row is None:
        if message["direction"] != "in" or limits.media_kind(message["type"]) is None or message["provider"] is None:
            return None
        if message["provider"] == "meta":
            row = await _fetch_meta(ctx, message)
        else:
            row = await _fetch_bridge(ctx, message)
        if row is None:
            return None
    async with ctx.pool.connection() as conn:
        if await store.record_on_message(conn, message_id, actions.reference(row)):
            logger.info(
                "message %s: media %s stored (%s, %d bytes)", message_id, row["id"], row["mime_type"], row["size"]
            )
    return str(row["id"])


async def _keep(ctx: FetchContext, message: dict[str, Any], target: Spool, mime: str, filename: str | None) -> Any:
    row = await actions.keep(
        ctx.pool,
        ctx.storage,
        target,
        company_id=message["company_id"],
        connection_id=message["connection_id"],
        message_id=message["id"],
        direction="in",
        mime_type=mime,
        filename=filename,
        retention_days=ctx.retention_days,
    )
    if row is None:  # another run stored it first
        async with ctx.pool.connection() as conn:
            row = await store.by_message(conn, message["id"])
    return row


async def _fetch_meta(ctx: FetchContext, message: dict[str, Any]) -> dict[str, Any] | None:
    payload: dict[str, Any] = message["payload"] or {}
    item = _item(payload, message["type"])
    media_id = payload.get("media_id") or item.get("id")
    if not media_id:
        return None
    client = MetaMediaClient(
        ctx.http,
        graph_url=ctx.graph_url,
        api_version=ctx.api_version,
        access_token=ctx.secrets.decrypt_optional(message["access_token"]) or "",
    )
    resolved = await client.resolve(str(media_id), message["phone_number_id"])
    if resolved.file_size is not None and resolved.file_size > ctx.max_bytes:
        raise MediaTooLargeError(f"the file is {resolved.file_size} bytes, more than the {ctx.max_bytes} kept")
    hashes = [h for h in (resolved.sha256, item.get("sha256")) if isinstance(h, str) and h]
    with spool(ctx.storage.spool_dir, resolved.file_size or ctx.max_bytes) as target:
        await client.download(resolved.url, target, declared_size=resolved.file_size)
        check(target, size=resolved.file_size, hashes=hashes)
        filename = item.get("filename") if isinstance(item.get("filename"), str) else None
        return await _keep(ctx, message, target, limits.normalize(resolved.mime_type), filename)


async def _fetch_bridge(ctx: FetchContext, message: dict[str, Any]) -> dict[str, Any] | None:
    if not message["external_id"] or not message["bridge_url"]:
        return None
    with spool(ctx.storage.spool_dir, ctx.max_bytes) as target:
        info = await bridge_base64(
            ctx.bridge_http or ctx.http,
            base_url=message["bridge_url"],
            instance=message["bridge_instance"] or "",
            api_key=ctx.secrets.decrypt_optional(message["bridge_api_key"]) or "",
            key_id=message["external_id"],
            target=target,
        )
        return await _keep(ctx, message, target, limits.normalize(info.mime_type), info.filename)


async def give_up(ctx: FetchContext, message_id: int, error: BaseException) -> None:
    """Note on the message that its file will not be fetched (a permanent failure, or the last attempt's):
    the sweep then leaves it alone. The failure itself goes to the dead-letter ledger as any job's."""
    async with ctx.pool.connection() as conn:
        await store.mark_failed(conn, message_id, f"{type(error).__name__}: {error}")


def sweep(db: Database, broker_client: Any, namespace: str, *, grace_seconds: int, limit: int = SWEEP_LIMIT) -> int:
    """Enqueue a ``media`` job for each inbound media message left without its file for ``grace_seconds`` (its
    job lost between the ingest commit and the enqueue, or with Redis) — within Meta's 7 days; how many."""
    now = dt.datetime.now(dt.UTC)
    with db.session() as session:
        ids = store.pending(
            session,
            older_than=now - dt.timedelta(seconds=grace_seconds),
            newer_than=now - MEDIA_ID_LIFETIME,
            limit=limit,
        )
    if ids:
        jobs = (contracts.FETCH_MEDIA.message(contracts.FetchMedia(i)) for i in ids)
        enqueue_many(broker_client, namespace, jobs)
        logger.info("media sweep: enqueued %d fetch(es) again", len(ids))
    return len(ids)
