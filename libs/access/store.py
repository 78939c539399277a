"""All SQL of API keys (``api_keys``), psycopg ``%(name)s`` parameters: async for the API, sync for the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

#: What is shown of a key (never its hash).
COLUMNS = "key_id, company_id, name, scopes, created_at, last_used_at, expires_at, revoked_at"

INSERT = (
    "INSERT INTO api_keys (key_id, secret_hash, company_id, name, scopes, expires_at) "
    "VALUES (%(key_id)s, %(secret_hash)s, %(company_id)s, %(name)s, %(scopes)s, %(expires_at)s) "
    f"RETURNING {COLUMNS}"
)
LIST = (
    f"SELECT {COLUMNS} FROM api_keys WHERE (%(company_id)s::bigint IS NULL OR company_id = %(company_id)s) "
    "ORDER BY id DESC LIMIT %(limit)s"
)
REVOKE = f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %(key_id)s RETURNING {COLUMNS}"
VERIFY = (
    "SELECT key_id, secret_hash, company_id, scopes, expires_at, revoked_at FROM api_keys WHERE key_id = %(key_id)s"
)
TOUCH = "UPDATE api_keys SET last_used_at = now() WHERE key_id = %(key_id)s"


def _values(key_id: str, secret_hash: str, company_id: int | None, name: str, scopes: list[str],
            expires_at: dt.datetime | None) -> dict[str, Any]:  # fmt: skip
    return {"key_id": key_id, "secret_hash": secret_hash, "company_id": company_id, "name": name,
            "scopes": scopes, "expires_at": expires_at}  # fmt: skip


async def insert(conn: AsyncConnection[Any], **values: Any) -> dict[str, Any]:
    """A new key row (``key_id``, ``secret_hash``, ``company_id``, ``name``, ``scopes``, ``expires_at``)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(INSERT, _values(**values))
    row = await cursor.fetchone()
    assert row is not None
    return row


async def listed(conn: AsyncConnection[Any], company_id: int | None, limit: int = 500) -> list[dict[str, Any]]:
    """Keys, newest first (of one company, or all)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(LIST, {"company_id": company_id, "limit": limit})
    return await cursor.fetchall()


async def revoke(conn: AsyncConnection[Any], key_id: str) -> dict[str, Any] | None:
    """Revoke a key (again: a no-op keeping the first time); ``None`` when there is no such key."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(REVOKE, {"key_id": key_id})
    return await cursor.fetchone()


async def for_verification(conn: AsyncConnection[Any], key_id: str) -> dict[str, Any] | None:
    """What checking a presented key needs (its hash, company, scopes, expiry, revocation)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(VERIFY, {"key_id": key_id})
    return await cursor.fetchone()


async def touch(conn: AsyncConnection[Any], key_id: str) -> None:
    """Set the key's ``last_used_at`` to now."""
    await conn.execute(TOUCH, {"key_id": key_id})


def _mappings(session: Session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in session.connection().exec_driver_sql(sql, params).mappings()]


def insert_sync(session: Session, **values: Any) -> dict[str, Any]:
    """:func:`insert` for sync callers (the CLI)."""
    return _mappings(session, INSERT, _values(**values))[0]


def listed_sync(session: Session, company_id: int | None, limit: int = 500) -> list[dict[str, Any]]:
    """:func:`listed` for sync callers."""
    return _mappings(session, LIST, {"company_id": company_id, "limit": limit})


def revoke_sync(session: Session, key_id: str) -> dict[str, Any] | None:
    """:func:`revoke` for sync callers."""
    rows = _mappings(session, REVOKE, {"key_id": key_id})
    return rows[0] if rows else None
