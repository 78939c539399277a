"""Companies (tenants): the minimum needed to create connections, messages and campaigns."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import ApiError, context, json_response, path_id, read_model
from libs.api.schemas import CompanyIn

COLUMNS = "id, name, campaign_weight, created_at"


async def create_company(request: Request) -> Response:
    """``POST /api/companies`` → 201."""
    body = await read_model(request, CompanyIn)
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute(
            f"INSERT INTO companies (name, campaign_weight) VALUES (%s, %s) RETURNING {COLUMNS}",
            (body.name, body.campaign_weight),
        )
        return json_response(await cursor.fetchone(), 201)


async def list_companies(request: Request) -> Response:
    """``GET /api/companies`` (newest first, up to 500)."""
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute(f"SELECT {COLUMNS} FROM companies ORDER BY id DESC LIMIT 500")
        return json_response(await cursor.fetchall())


async def get_company(request: Request) -> Response:
    """``GET /api/companies/{id}``."""
    company_id = path_id(request)
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute(f"SELECT {COLUMNS} FROM companies WHERE id = %s", (company_id,))
        row = await cursor.fetchone()
    if row is None:
        raise ApiError(404, f"no company {company_id}")
    return json_response(row)
