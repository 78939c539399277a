"""Contacts (the people who wrote to a company) and their conversations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_row, company_filter
from libs.api.http import ApiError, context, json_response, path_id, query_id, query_int
from libs.api.messages import MAX_PAGE, message_page, page_bounds
from libs.contacts import store
from libs.messages.store import Filter


async def list_contacts(request: Request) -> Response:
    """``GET /api/contacts?company_id=N[&after=<id>&limit=]``: the company's contacts (by id), each with the
    last message of its conversation and its time."""
    company = company_filter(request, query_id(request, "company_id"))
    if company is None:
        raise ApiError(400, "company_id is required")
    after = query_id(request, "after") or 0
    limit = query_int(request, "limit", default=100, low=1, high=MAX_PAGE)
    async with context(request).pool.connection() as conn:
        rows = await store.page(conn, company, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({"contacts": rows, "after": str(rows[-1]["id"]) if rows and more else None, "has_more": more})


async def contact_messages(request: Request) -> Response:
    """``GET /api/contacts/{id}/messages[?after=|before=&limit=]``: the conversation with one contact, both
    directions, newest first (or oldest first from ``after``)."""
    contact_id = path_id(request)
    after, before, limit = page_bounds(request)
    async with context(request).pool.connection() as conn:
        contact = await store.get(conn, contact_id)
        check_row(request, contact, "contact", contact_id)
        assert contact is not None
        flt = Filter(company_id=contact["company_id"], contact=contact["wa_id"])
        page = await message_page(conn, flt, after=after, before=before, limit=limit)
    return json_response(page)
