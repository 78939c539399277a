"""What a producer or an operator does with a company's opt-out list — one function each (see
:mod:`libs.rules.optouts` for what the list does)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from libs.companies import store as companies
from libs.refusals import InvalidError, NotFoundError
from libs.rules import store

#: Numbers added per statement by an import.
IMPORT_BATCH = 5_000


async def _company(conn: Any, company_id: int) -> None:
    if not await companies.exists(conn, company_id):
        raise InvalidError(f"company {company_id} does not exist")


async def add_opt_outs(pool: AsyncConnectionPool[Any], company_id: int, phones: list[str], source: str) -> int:
    """Put ``phones`` (normalised digits) on the company's list; how many were not on it yet."""
    async with pool.connection() as conn, conn.transaction():
        await _company(conn, company_id)
        added = 0
        for start in range(0, len(phones), IMPORT_BATCH):
            added += len(await store.opt_out(conn, company_id, phones[start : start + IMPORT_BATCH], source))
        return added


async def remove_opt_out(pool: AsyncConnectionPool[Any], company_id: int, phone: str, source: str = "api") -> None:
    """Take ``phone`` off the company's list (:class:`~libs.refusals.NotFoundError` when it is not on it)."""
    async with pool.connection() as conn:
        if not await store.opt_in(conn, company_id, phone, source):
            raise NotFoundError(f"{phone[:4]}… is not on company {company_id}'s opt-out list")


async def list_opt_outs(
    pool: AsyncConnectionPool[Any], company_id: int, *, after: str, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the company's list (by number) and whether more follow."""
    async with pool.connection() as conn:
        await _company(conn, company_id)
        rows = await store.opt_outs_page(conn, company_id, after=after, limit=limit + 1)
    return rows[:limit], len(rows) > limit
