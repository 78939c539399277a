"""All SQL of the audit log (``audit_log``): async for the API, sync for the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

COLUMNS = "id, at, actor, company_id, action, target, details"
INSERT = (
    "INSERT INTO audit_log (actor, company_id, action, target, details) "
    "VALUES (%(actor)s, %(company_id)s, %(action)s, %(target)s, %(details)s)"
)
LIST = (
    f"SELECT {COLUMNS} FROM audit_log WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s) "
    "AND (%(company_id)s::bigint IS NULL OR company_id = %(company_id)s) ORDER BY id DESC LIMIT %(limit)s"
)


def _values(actor: str, company_id: int | None, action: str, target: str | None,
            details: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    return {"actor": actor, "company_id": company_id, "action": action[:120],
            "target": target[:200] if target else None,
            "details": Jsonb(details) if details is not None else None}  # fmt: skip


async def record(conn: AsyncConnection[Any], **entry: Any) -> None:
    """Append an entry (``actor``, ``company_id``, ``action``, ``target``, ``details``)."""
    await conn.execute(INSERT, _values(**entry))


async def newest(conn: AsyncConnection[Any], *, since: dt.datetime | None, company_id: int | None,
                 limit: int) -> list[dict[str, Any]]:  # fmt: skip
    """Entries newest first, since a time, of one company or all."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(LIST, {"since": since, "company_id": company_id, "limit": limit})
    return await cursor.fetchall()


def record_sync(session: Session, **entry: Any) -> None:
    """:func:`record` for sync callers (the CLI)."""
    session.connection().exec_driver_sql(INSERT, _values(**entry))


def newest_sync(session: Session, *, since: dt.datetime | None, company_id: int | None,
                limit: int) -> list[dict[str, Any]]:  # fmt: skip
    """:func:`newest` for sync callers."""
    params = {"since": since, "company_id": company_id, "limit": limit}
    return [dict(row) for row in session.connection().exec_driver_sql(LIST, params).mappings()]
