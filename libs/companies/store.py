"""All SQL of companies (tenants), psycopg ``%(name)s`` parameters: async for the API, sync for the workers."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

COLUMNS = "id, name, campaign_weight, opt_out_keywords, opt_in_keywords, created_at"

INSERT = (
    "INSERT INTO companies (name, campaign_weight, opt_out_keywords, opt_in_keywords) "
    f"VALUES (%(name)s, %(campaign_weight)s, %(opt_out)s, %(opt_in)s) RETURNING {COLUMNS}"
)
LIST = f"SELECT {COLUMNS} FROM companies ORDER BY id DESC LIMIT %(limit)s"
GET = f"SELECT {COLUMNS} FROM companies WHERE id = %(id)s"
EXISTS = "SELECT 1 FROM companies WHERE id = %(id)s"
WEIGHT = "SELECT campaign_weight FROM companies WHERE id = %(id)s"
WEIGHTS = "SELECT id, campaign_weight FROM companies WHERE id = ANY(%(ids)s)"


async def insert(
    conn: AsyncConnection[Any],
    name: str,
    campaign_weight: int,
    opt_out_keywords: list[str] | None = None,
    opt_in_keywords: list[str] | None = None,
) -> dict[str, Any]:
    """A new company (keywords ``None``: the defaults of :mod:`libs.rules.optouts`)."""
    cursor = conn.cursor(row_factory=dict_row)
    params = {"name": name, "campaign_weight": campaign_weight, "opt_out": opt_out_keywords, "opt_in": opt_in_keywords}
    await cursor.execute(INSERT, params)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def newest(conn: AsyncConnection[Any], limit: int = 500) -> list[dict[str, Any]]:
    """The newest companies first."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(LIST, {"limit": limit})
    return await cursor.fetchall()


async def get(conn: AsyncConnection[Any], company_id: int) -> dict[str, Any] | None:
    """One company, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET, {"id": company_id})
    return await cursor.fetchone()


async def exists(conn: AsyncConnection[Any], company_id: int) -> bool:
    """Whether company ``company_id`` exists."""
    cursor = await conn.execute(EXISTS, {"id": company_id})
    return await cursor.fetchone() is not None


def campaign_weight(session: Session, company_id: int) -> int:
    """The company's share of the campaign lanes (sync)."""
    return int(session.connection().exec_driver_sql(WEIGHT, {"id": company_id}).scalar_one())


def campaign_weights(session: Session, company_ids: list[int]) -> dict[int, int]:
    """Company id → campaign weight for ``company_ids`` (sync; missing companies are left out)."""
    rows = session.connection().exec_driver_sql(WEIGHTS, {"ids": company_ids})
    return {int(company_id): int(weight) for company_id, weight in rows}


def exists_sync(session: Session, company_id: int) -> bool:
    """:func:`exists` for sync callers."""
    return session.connection().exec_driver_sql(EXISTS, {"id": company_id}).first() is not None
