"""What is done with media files — one function each: keep a spooled file, describe it, prune old ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from libs.db.engine import Database
from libs.media import store
from libs.media.spool import Spool
from libs.media.storage import MediaStorage

logger = logging.getLogger(__name__)

#: Public id of a media file: ``med_`` and 32 hex digits.
MEDIA_ID_PREFIX = "med_"
MEDIA_ID = re.compile(r"^med_[0-9a-f]{32}$")
#: Media rows (and their files) deleted per prune batch.
PRUNE_BATCH = 500


def new_media_id() -> str:
    """A fresh ``med_…`` id."""
    return MEDIA_ID_PREFIX + uuid.uuid4().hex


def is_media_id(value: object) -> bool:
    """Whether ``value`` is a zapq media id (as opposed to a provider's id or anything else)."""
    return isinstance(value, str) and MEDIA_ID.match(value) is not None


def storage_key(company_id: int, media_id: str) -> str:
    """Where a company's file is kept (one folder per company, fanned out by the id)."""
    return f"{company_id}/{media_id[4:6]}/{media_id}"


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A media row as the API shows it (never the storage key or provider ids)."""
    return {
        "id": row["id"],
        "company_id": row["company_id"],
        "connection_id": row["connection_id"],
        "message_id": row["message_id"],
        "direction": row["direction"],
        "mime_type": row["mime_type"],
        "size": row["size"],
        "sha256": row["sha256"],
        "filename": row["filename"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
    }


def reference(row: dict[str, Any]) -> dict[str, Any]:
    """What a message row and the ``message.media`` event carry of a stored file."""
    return {"id": row["id"], "mime_type": row["mime_type"], "size": row["size"], "sha256": row["sha256"]}


async def keep(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    storage: MediaStorage,
    spooled: Spool,
    *,
    company_id: int,
    direction: str,
    mime_type: str,
    retention_days: int,
    filename: str | None = None,
    connection_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any] | None:
    """Store a finished spool file and create its row; ``None`` when ``message_id`` already has a file (the
    object just written is removed again). A failed insert removes the object too."""
    spooled.close()
    media_id = new_media_id()
    key = storage_key(company_id, media_id)
    await storage.put_file(key, spooled.path)
    values = {
        "id": media_id,
        "company_id": company_id,
        "connection_id": connection_id,
        "message_id": message_id,
        "direction": direction,
        "mime_type": mime_type,
        "size": spooled.size,
        "sha256": spooled.sha256,
        "filename": filename,
        "storage_key": key,
        "retention_days": retention_days,
    }
    try:
        async with pool.connection() as conn:
            row = await store.insert(conn, values)
    except BaseException:
        await storage.delete(key)
        raise
    if row is None:
        await storage.delete(key)
    return row


async def _delete_objects(storage: MediaStorage, keys: list[str]) -> None:
    for key in keys:
        await storage.delete(key)


def prune(db: Database, storage: MediaStorage, *, now: dt.datetime | None = None, batch: int = PRUNE_BATCH) -> int:
    """Delete the media past their retention: their files first, then their rows (a file that cannot be deleted
    now keeps its row for the next run). Returns how many were deleted."""
    now = now or dt.datetime.now(dt.UTC)
    deleted = 0
    while True:
        with db.session() as session:
            rows = store.expired(session, now, batch)
        if not rows:
            return deleted
        asyncio.run(_delete_objects(storage, [key for _, key in rows]))
        with db.session() as session:
            deleted += store.delete(session, [media_id for media_id, _ in rows])
        if len(rows) < batch:
            logger.info("pruned %d media files", deleted)
            return deleted
