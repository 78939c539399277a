"""Companies (tenants): the minimum needed to create connections, messages and campaigns."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_row, principal
from libs.api.http import context, json_response, path_id, read_model
from libs.api.schemas import CompanyIn
from libs.companies import store


async def create_company(request: Request) -> Response:
    """``POST /api/companies`` → 201."""
    body = await read_model(request, CompanyIn)
    async with context(request).pool.connection() as conn:
        row = await store.insert(conn, body.name, body.campaign_weight, body.opt_out_keywords, body.opt_in_keywords)
    return json_response(row, 201)


async def list_companies(request: Request) -> Response:
    """``GET /api/companies`` (newest first, up to 500)."""
    own = principal(request).company_id
    async with context(request).pool.connection() as conn:
        if own is not None:
            row = await store.get(conn, own)
            return json_response([row] if row is not None else [])
        return json_response(await store.newest(conn, 500))


async def get_company(request: Request) -> Response:
    """``GET /api/companies/{id}``."""
    company_id = path_id(request)
    async with context(request).pool.connection() as conn:
        row = await store.get(conn, company_id)
    check_row(request, None if row is None else {**row, "company_id": row["id"]}, "company", company_id)
    return json_response(row)
