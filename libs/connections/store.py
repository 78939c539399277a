"""All SQL of connections (psycopg ``%(name)s`` parameters): async for the API and the edge, sync for the
ingest worker and ``zapq secrets rotate``.

The secret columns (``access_token``, ``bridge_api_key``, ``webhook_secret``) hold Fernet tokens: callers
encrypt before writing and decrypt after reading (:mod:`libs.secrets`); this module never sees a clear value.

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
bridge_url, bridge_instance, rate_per_second, service_window, portfolio_id, messaging_limit, messaging_tier,
quality_rating, throughput_level, quality_event, quality_updated_at, webhook_key, created_at, updated_at,
access_token IS NOT NULL AS has_access_token, bridge_api_key IS NOT NULL AS has_bridge_api_key,
webhook_secret IS NOT NULL AS has_webhook_secret"""
#: The encrypted columns.
SECRET_COLUMNS = ("access_token", "bridge_api_key", "webhook_secret")

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
    "webhook_key",
    "webhook_secret",
    "service_window",
    "portfolio_id",
    "messaging_limit",
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
        "webhook_key",
        "webhook_secret",
        "service_window",
        "portfolio_id",
        "messaging_limit",
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
OWNER = "SELECT company_id, status, provider FROM connections WHERE id = %(id)s"
#: The default connection of a company: its first active one.
FIRST_ACTIVE = "SELECT id FROM connections WHERE company_id = %(company_id)s AND status = 'active' ORDER BY id LIMIT 1"
#: Set one connection's status and reason, with its ``connection.status`` event when it changed.
SET_STATUS = SET_CONNECTION_STATUS

#: The Meta connections of some phone_number_ids (the ingest worker's hot path: plain SQL through the driver).
META_BY_PHONE_NUMBER_IDS = """
SELECT phone_number_id, company_id, id FROM connections
WHERE provider = 'meta' AND phone_number_id = ANY(%(ids)b::text[])
"""
#: The Baileys connection of a bridge instance.
BAILEYS_BY_INSTANCE = (
    "SELECT company_id, id, status FROM connections WHERE provider = 'baileys' AND bridge_instance = %(instance)s"
)
#: The Baileys connection a webhook URL names, with its (encrypted) secret: the edge's check.
BAILEYS_BY_WEBHOOK_KEY = (
    "SELECT id, bridge_instance, webhook_secret FROM connections WHERE provider = 'baileys' AND webhook_key = %(key)s"
)
#: Whether a bridge instance's connection has its own webhook secret (then only its own URL is accepted).
BAILEYS_HAS_OWN_SECRET = (
    "SELECT EXISTS (SELECT 1 FROM connections WHERE provider = 'baileys' AND bridge_instance = %(instance)s "
    "AND webhook_secret IS NOT NULL)"
)
#: The encrypted credentials of the connections after an id, locked until the transaction ends (rotation).
CREDENTIALS_AFTER = """
SELECT id, access_token, bridge_api_key, webhook_secret FROM connections
WHERE id > %(after)s AND (access_token IS NOT NULL OR bridge_api_key IS NOT NULL OR webhook_secret IS NOT NULL)
ORDER BY id LIMIT %(limit)s FOR UPDATE
"""
#: Replace one connection's encrypted credentials (rotation: the same values under the newest key).
SET_CREDENTIALS = """
UPDATE connections SET access_token = %(access_token)s, bridge_api_key = %(bridge_api_key)s,
  webhook_secret = %(webhook_secret)s
WHERE id = %(id)s
"""


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
    """``company_id``, ``status`` and ``provider`` of a connection, or ``None``."""
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


async def baileys_by_webhook_key(conn: AsyncConnection[Any], key: str) -> tuple[int, str, str | None] | None:
    """``(connection_id, bridge_instance, encrypted webhook_secret)`` of the Baileys connection whose webhook
    URL is ``key``, or ``None``."""
    cursor = await conn.execute(BAILEYS_BY_WEBHOOK_KEY, {"key": key})
    row = await cursor.fetchone()
    if row is None:
        return None
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return int(values[0]), str(values[1]), values[2]


async def baileys_has_own_secret(conn: AsyncConnection[Any], instance: str) -> bool:
    """True when the bridge instance's connection has its own webhook secret."""
    cursor = await conn.execute(BAILEYS_HAS_OWN_SECRET, {"instance": instance})
    row = await cursor.fetchone()
    assert row is not None
    return bool(next(iter(row.values())) if isinstance(row, dict) else row[0])


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


def credentials_after(session: Session, after: int, limit: int) -> list[tuple[int, str | None, str | None, str | None]]:
    """``(id, access_token, bridge_api_key, webhook_secret)`` (encrypted) of up to ``limit`` connections with
    an id above ``after``, locked in the session's transaction."""
    rows = session.connection().exec_driver_sql(CREDENTIALS_AFTER, {"after": after, "limit": limit}).all()
    return [(int(r[0]), r[1], r[2], r[3]) for r in rows]


def set_credentials(session: Session, connection_id: int, values: dict[str, str | None]) -> None:
    """Write one connection's encrypted ``access_token``, ``bridge_api_key`` and ``webhook_secret``."""
    session.connection().exec_driver_sql(SET_CREDENTIALS, {**values, "id": connection_id})
