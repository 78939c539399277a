"""SQL of the ``media`` table (psycopg ``%(name)s``): async for the API, the media fetcher and the sender;
sync for the scheduler's prune. Recording an inbound message's file writes its ``message.media`` event in the
same statement (:mod:`libs.events.outbox_store`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

from libs.events import outbox_store as events
from libs.events.types import MESSAGE_MEDIA

#: The rows of ``ix_messages_media_pending`` (migration 0013): inbound media messages not yet stored nor given up.
MEDIA_PENDING = (
    "direction = 'in' AND type IN ('image', 'video', 'audio', 'document', 'sticker', 'imageMessage', "
    "'videoMessage', 'audioMessage', 'documentMessage', 'documentWithCaptionMessage', 'stickerMessage') "
    "AND NOT payload ? 'stored_media' AND NOT payload ? 'media_error'"
)

COLUMNS = """id, company_id, connection_id, message_id, direction, mime_type, size, sha256, filename, storage_key,
provider_ids, created_at, expires_at"""

INSERT = f"""
INSERT INTO media (id, company_id, connection_id, message_id, direction, mime_type, size, sha256, filename,
                   storage_key, expires_at)
VALUES (%(id)s, %(company_id)s, %(connection_id)s, %(message_id)s, %(direction)s, %(mime_type)s, %(size)s,
        %(sha256)s, %(filename)s, %(storage_key)s, now() + make_interval(days => %(retention_days)s))
ON CONFLICT (message_id) WHERE message_id IS NOT NULL DO NOTHING
RETURNING {COLUMNS}
"""

GET = f"SELECT {COLUMNS} FROM media WHERE id = %(id)s"
BY_MESSAGE = f"SELECT {COLUMNS} FROM media WHERE message_id = %(message_id)s"

#: An inbound message with what fetching its file needs: its connection's provider and (encrypted) credentials.
MESSAGE_FOR_FETCH = """
SELECT m.id, m.company_id, m.connection_id, m.direction, m.type, m.payload, m.external_id, m.recipient,
       c.provider, c.phone_number_id, c.access_token, c.bridge_url, c.bridge_instance, c.bridge_api_key
FROM messages m LEFT JOIN connections c ON c.id = m.connection_id
WHERE m.id = %(message_id)s
"""

#: The stored file on its message (``payload.stored_media``) and the ``message.media`` event — once.
RECORD_ON_MESSAGE = f"""
WITH updated AS (
  UPDATE messages SET payload = payload || jsonb_build_object('stored_media', %(media)s::jsonb), updated_at = now()
  WHERE id = %(message_id)s AND NOT payload ? 'stored_media'
  RETURNING id, company_id, connection_id, external_id, recipient, type
), events_written AS (
  {events.INSERT_EVENTS}
  SELECT u.company_id, '{MESSAGE_MEDIA}', {events.conversation_of_contact("u.recipient")}, now(),
         jsonb_build_object('message_id', u.id, 'company_id', u.company_id, 'connection_id', u.connection_id,
                            'external_id', u.external_id, 'contact', jsonb_build_object('wa_id', u.recipient),
                            'type', u.type, 'media', %(media)s::jsonb, 'timestamp', zapq_iso(now()))
  FROM updated u
)
SELECT count(*) FROM updated
"""

#: Cache a connection's provider id of an upload (``provider_ids.<connection_id>``).
CACHE_PROVIDER_ID = """
UPDATE media SET provider_ids = provider_ids || jsonb_build_object(%(connection)s::text, %(entry)s::jsonb)
WHERE id = %(id)s
"""

#: Serialises the uploads of one file to one connection (held until the caller's transaction ends).
LOCK_UPLOAD = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"

#: A message whose file could not be fetched for good: the sweep leaves it alone (``payload.media_error``).
MARK_FAILED = """
UPDATE messages SET payload = payload || jsonb_build_object('media_error', %(error)s::text), updated_at = now()
WHERE id = %(message_id)s AND NOT payload ? 'stored_media'
"""

#: Inbound media messages whose file is neither stored nor given up (their job was lost): the partial index
#: ``ix_messages_media_pending`` holds exactly these rows.
PENDING = f"""
SELECT id FROM messages
WHERE {MEDIA_PENDING}
  AND created_at BETWEEN %(newer_than)s AND %(older_than)s
ORDER BY created_at LIMIT %(limit)s
"""

EXPIRED = "SELECT id, storage_key FROM media WHERE expires_at < %(now)s ORDER BY expires_at LIMIT %(limit)s"
DELETE = "DELETE FROM media WHERE id = ANY(%(ids)s)"


async def insert(conn: AsyncConnection[Any], values: dict[str, Any]) -> dict[str, Any] | None:
    """Create a media row; ``None`` when the message already has one (an inbound file fetched twice)."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(INSERT, {"message_id": None, "connection_id": None, "filename": None, **values})
        return await cursor.fetchone()


async def get(conn: AsyncConnection[Any], media_id: str) -> dict[str, Any] | None:
    """One media row."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(GET, {"id": media_id})
        return await cursor.fetchone()


async def by_message(conn: AsyncConnection[Any], message_id: int) -> dict[str, Any] | None:
    """The media row of an inbound message, if its file was stored."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(BY_MESSAGE, {"message_id": message_id})
        return await cursor.fetchone()


async def message_for_fetch(conn: AsyncConnection[Any], message_id: int) -> dict[str, Any] | None:
    """:data:`MESSAGE_FOR_FETCH`."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(MESSAGE_FOR_FETCH, {"message_id": message_id})
        return await cursor.fetchone()


async def record_on_message(conn: AsyncConnection[Any], message_id: int, media: dict[str, Any]) -> bool:
    """:data:`RECORD_ON_MESSAGE`; whether it was recorded now (``False``: it already was)."""
    async with conn.cursor() as cursor:
        await cursor.execute(RECORD_ON_MESSAGE, {"message_id": message_id, "media": Jsonb(media)})
        row = await cursor.fetchone()
        return bool(row and row[0])


async def cache_provider_id(
    conn: AsyncConnection[Any], media_id: str, connection_id: int, provider_id: str, expires_at: dt.datetime
) -> None:
    """Remember ``provider_id`` as the connection's id of the upload until ``expires_at``."""
    entry = {"id": provider_id, "expires_at": expires_at.isoformat()}
    params = {"id": media_id, "connection": str(connection_id), "entry": Jsonb(entry)}
    await conn.execute(CACHE_PROVIDER_ID, params)


async def lock_upload(conn: AsyncConnection[Any], media_id: str, connection_id: int) -> None:
    """Wait for (then hold, until the transaction ends) the right to upload ``media_id`` to ``connection_id``."""
    await conn.execute(LOCK_UPLOAD, {"key": f"media-upload:{media_id}:{connection_id}"})


async def mark_failed(conn: AsyncConnection[Any], message_id: int, error: str) -> None:
    """:data:`MARK_FAILED`."""
    await conn.execute(MARK_FAILED, {"message_id": message_id, "error": error[:500]})


def pending(session: Session, *, older_than: dt.datetime, newer_than: dt.datetime, limit: int) -> list[int]:
    """Ids of inbound media messages created in ``[newer_than, older_than]`` whose file is neither stored nor
    given up, oldest first."""
    params = {"older_than": older_than, "newer_than": newer_than, "limit": limit}
    return [row[0] for row in session.connection().exec_driver_sql(PENDING, params)]


def expired(session: Session, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` ``(id, storage_key)`` of media past their retention, oldest first."""
    rows = session.connection().exec_driver_sql(EXPIRED, {"now": now, "limit": limit}).all()
    return [(row[0], row[1]) for row in rows]


def delete(session: Session, ids: list[str]) -> int:
    """Delete media rows."""
    return session.connection().exec_driver_sql(DELETE, {"ids": ids}).rowcount
