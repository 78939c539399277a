"""All SQL of connections (psycopg ``%(name)s`` parameters): async for the API, sync for the ingest worker.

A status change is one statement with its ``connection.status`` event (:mod:`libs.events.outbox_store`); the sender's
own status changes (needs attention, closed) are in :mod:`libs.sending.store`, built from the same fragment.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

from libs.db.models import ConnectionStatus
from libs.events.outbox_store import SET_CONNECTION_STATUS

#: Every column but the secrets, plus whether each secret is set.
COLUMNS = """id, company_id, name, provider, status, status_reason, phone_number_id, waba_id, display_phone_number,
bridge_url, bridge_instance, rate_per_second, service_window, created_at, updated_at,
access_token IS NOT NULL AS has_access_token, bridge_api_key IS NOT NULL AS has_bridge_api_key"""

#: The columns a new connection is given.
INSERTED = (
    "company_id",
    "provider",
    "name",
    "phone_number_id",
    "access_token",
    "waba_id",
    "display_phone_number",
    "bridge_url",
    "bridge_instance",
    "bridge_api_key",
    "rate_per_second",
    "service_window",
)
#: The columns a patch may change (its status goes through :data:`SET_STATUS`).
PATCHABLE = frozenset(
    {
        "name",
        "access_token",
        "waba_id",
        "display_phone_number",
        "bridge_url",
        "bridge_api_key",
        "rate_per_second",
        "service_window",
    }
)

INSERT = (
    f"INSERT INTO connections ({', '.join(INSERTED)}) VALUES ({', '.join(f'%({name})s' for name in INSERTED)}) "
    f"RETURNING {COLUMNS}"
)
LIST = f"SELECT {COLUMNS} FROM connections ORDER BY id LIMIT 1000"
LIST_OF_COMPANY = f"SELECT {COLUMNS} FROM connections WHERE company_id = %(company_id)s ORDER BY id LIMIT 1000"
GET = f"SELECT {COLUMNS} FROM connections WHERE id = %(id)s"
#: Whose connection it is, and whether it is active.
OWNER = "SELECT company_id, status FROM connections WHERE id = %(id)s"
#: The default connection of a company: its first active one.
FIRST_ACTIVE = "SELECT id FROM connections WHERE company_id = %(company_id)s AND status = 'active' ORDER BY id LIMIT 1"
#: Set one connection's status and reason, with its ``connection.status`` event when it changed.
SET_STATUS = SET_CONNECTION_STATUS

#: The Meta connections of some phone_number_ids (the ingest worker's hot path: plain SQL through the driver).
META_BY_PHONE_NUMBER_IDS = """
SELECT phone_number_id, company_id, id FROM connections
WHERE provider = 'meta' AND phone_number_id = ANY(%(ids)s::text[])
"""
#: The Baileys connection of a bridge instance.
BAILEYS_BY_INSTANCE = (
    "SELECT company_id, id, status FROM connections WHERE provider = 'baileys' AND bridge_instance = %(instance)s"
)


def _update_sql(names: list[str]) -> str:
    """An update of the given columns (each one of :data:`PATCHABLE`)."""
    unknown = set(names) - PATCHABLE
    if unknown:
        raise ValueError(f"not patchable: {', '.join(sorted(unknown))}")
    assignments = ", ".join(f"{name} = %({name})s" for name in names)
    return f"UPDATE connections SET {assignments}, updated_at = now() WHERE id = %(id)s"


# -- async (the API) ------------------------------------------------------------------------------------


async def insert(conn: AsyncConnection[Any], values: dict[str, Any]) -> dict[str, Any]:
    """A new connection (``values``: every column of :data:`INSERTED`); raises psycopg's ``UniqueViolation``
    when its number or instance is taken."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(INSERT, {name: values.get(name) for name in INSERTED})
    row = await cursor.fetchone()
    assert row is not None
    return row


async def listed(conn: AsyncConnection[Any], company_id: int | None = None) -> list[dict[str, Any]]:
    """Connections by id (of one company, or all), up to 1,000."""
    cursor = conn.cursor(row_factory=dict_row)
    if company_id is None:
        await cursor.execute(LIST)
    else:
        await cursor.execute(LIST_OF_COMPANY, {"company_id": company_id})
    return await cursor.fetchall()


async def get(conn: AsyncConnection[Any], connection_id: int) -> dict[str, Any] | None:
    """One connection (no secrets), or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET, {"id": connection_id})
    return await cursor.fetchone()


async def owner(conn: AsyncConnection[Any], connection_id: int) -> dict[str, Any] | None:
    """``company_id`` and ``status`` of a connection, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(OWNER, {"id": connection_id})
    return await cursor.fetchone()


async def first_active(conn: AsyncConnection[Any], company_id: int) -> int | None:
    """The id of the company's first active connection, or ``None``."""
    cursor = await conn.execute(FIRST_ACTIVE, {"company_id": company_id})
    row = await cursor.fetchone()
    return None if row is None else int(row["id"] if isinstance(row, dict) else row[0])


async def update(conn: AsyncConnection[Any], connection_id: int, changes: dict[str, Any]) -> None:
    """Change the columns of ``changes`` (each one of :data:`PATCHABLE`)."""
    await conn.execute(_update_sql(list(changes)), {**changes, "id": connection_id})


async def set_status(conn: AsyncConnection[Any], connection_id: int, status: str, reason: str | None) -> None:
    """:data:`SET_STATUS` (with its event when the status changed)."""
    await conn.execute(SET_STATUS, {"id": connection_id, "status": status, "reason": reason})


# -- sync (the ingest worker) ---------------------------------------------------------------------------


def meta_by_phone_number_ids(session: Session, phone_number_ids: list[str]) -> list[tuple[str, int, int]]:
    """``(phone_number_id, company_id, connection_id)`` of the Meta connections of ``phone_number_ids``."""
    rows = session.connection().exec_driver_sql(META_BY_PHONE_NUMBER_IDS, {"ids": phone_number_ids}).all()
    return [(pid, company, conn) for pid, company, conn in rows]


def baileys_by_instance(session: Session, instance: str) -> tuple[int, int, ConnectionStatus] | None:
    """``(company_id, connection_id, status)`` of the bridge instance's connection, or ``None``."""
    row = session.connection().exec_driver_sql(BAILEYS_BY_INSTANCE, {"instance": instance}).one_or_none()
    return (row[0], row[1], ConnectionStatus(row[2])) if row else None


def set_status_sync(session: Session, connection_id: int, status: str, reason: str | None) -> None:
    """:func:`set_status` in the session's transaction."""
    session.connection().exec_driver_sql(SET_STATUS, {"id": connection_id, "status": status, "reason": reason})
