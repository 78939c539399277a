"""Contacts (the people who wrote to a company) and their conversations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import ApiError, context, json_response, path_id, query_id, query_int
from libs.api.messages import MAX_PAGE, message_page, page_bounds

#: Each contact with the last message of its conversation (either direction).
CONTACTS = """
SELECT c.id, c.company_id, c.wa_id, c.name, c.created_at, c.updated_at,
       m.id AS last_message_id, m.direction AS last_direction, m.type AS last_type, m.body AS last_text,
       m.status AS last_status, m.created_at AS last_message_at
FROM contacts c
LEFT JOIN LATERAL (
  SELECT id, direction, type, body, status, created_at FROM messages
  WHERE company_id = c.company_id AND recipient = c.wa_id ORDER BY id DESC LIMIT 1
) m ON true
WHERE c.company_id = %(company)s AND c.id > %(after)s
ORDER BY c.id LIMIT %(limit)s
"""


async def list_contacts(request: Request) -> Response:
    """``GET /api/contacts?company_id=N[&after=<id>&limit=]``: the company's contacts (by id), each with the
    last message of its conversation and its time."""
    company = query_id(request, "company_id")
    if company is None:
        raise ApiError(400, "company_id is required")
    after = query_id(request, "after") or 0
    limit = query_int(request, "limit", default=100, low=1, high=MAX_PAGE)
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute(CONTACTS, {"company": company, "after": after, "limit": limit + 1})
        rows = await cursor.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({"contacts": rows, "after": str(rows[-1]["id"]) if rows and more else None, "has_more": more})


async def contact_messages(request: Request) -> Response:
    """``GET /api/contacts/{id}/messages[?after=|before=&limit=]``: the conversation with one contact, both
    directions, newest first (or oldest first from ``after``)."""
    contact_id = path_id(request)
    after, before, limit = page_bounds(request)
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute("SELECT company_id, wa_id FROM contacts WHERE id = %s", (contact_id,))
        contact = await cursor.fetchone()
        if contact is None:
            raise ApiError(404, f"no contact {contact_id}")
        page = await message_page(
            conn,
            ["company_id = %(company)s", "recipient = %(contact)s"],
            {"company": contact["company_id"], "contact": contact["wa_id"]},
            after=after,
            before=before,
            limit=limit,
        )
    return json_response(page)
