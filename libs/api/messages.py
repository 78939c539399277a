"""Outbound messages created by producers, and the message history of companies and contacts.

Creating and retrying are :mod:`libs.messages.actions` (see there for idempotency and for when a retry is
refused); these handlers parse and render.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_body_company, check_owner, check_row, company_filter
from libs.api.http import MAX_PAGE, ApiError, context, json_response, path_id, query_id, query_int, read_model
from libs.api.schemas import MessageIn, normalize_phone
from libs.messages import actions, store
from libs.tracing import annotate, enabled, hashed, span

MAX_IDEMPOTENCY_KEY = 200


def _out(row: dict[str, Any]) -> dict[str, Any]:
    """A message as the API answers it: ``contact`` is the other party's number whatever the direction (the
    customer an outbound message goes to, the one an inbound message came from). ``recipient`` is the same
    value under its old, direction-bound name: deprecated, kept for one release (removed in the next)."""
    return {**row, "contact": row["recipient"], "job_id": actions.job_id(row)}


async def create_message(request: Request) -> Response:
    """``POST /api/messages`` → 201 (or 200 for a repeated ``Idempotency-Key``)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key.strip()) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    body = await read_model(request, MessageIn)
    check_body_company(request, body.company_id)
    new = actions.NewMessage(
        company_id=body.company_id,
        to=body.to,
        text=body.text,
        template=body.template.content() if body.template is not None else None,
        kind=body.kind,
        content=body.content() if body.template is None else None,
        reply_to=body.context.message_id if body.context is not None else None,
        priority=body.priority,
        connection_id=body.connection_id,
        transactional=body.transactional,
        idempotency_key=key.strip() if key else None,
    )
    ctx = context(request)
    with span("POST /api/messages", headers=request.headers if enabled() else None, server=True):
        row, created = await actions.create_message(ctx.pool, ctx.redis, ctx.namespace, new, templates=ctx.templates)
        annotate(**{"zapq.message": hashed(row["id"]) if enabled() else None, "zapq.created": created})
    if not created:
        return json_response(_out(row), 200)
    return json_response(_out(row), 201, headers={"location": f"/api/messages/{row['id']}"})


async def get_message(request: Request) -> Response:
    """``GET /api/messages/{id}``: the message with its times (``created_at`` … ``read_at``, ``failed_at``; Meta's
    second-resolution stamps are clamped so that ``sent_at`` ≤ ``delivered_at`` ≤ ``read_at``), its provider id
    (``external_id``), its error and earlier failures (``history``), its send job (``job_id``) and ``contact``
    (the other party; ``recipient`` is its deprecated old name)."""
    message_id = path_id(request)
    async with context(request).pool.connection() as conn:
        row = await store.get(conn, message_id)
    check_row(request, row, "message", message_id)
    assert row is not None
    return json_response(_out(row))


DIRECTIONS = {"in", "out"}
STATUSES = {"received", "queued", "sending", "sent", "delivered", "read", "played", "failed", "cancelled"}


async def message_page(
    conn: Any, flt: store.Filter, *, after: int | None, before: int | None, limit: int
) -> dict[str, Any]:
    """A page of messages by id: ``after`` (ascending from that id), else ``before`` / newest (descending);
    with the cursors to page on in either direction."""
    rows, order = await store.page(conn, flt, after=after, before=before, limit=limit)
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [row["id"] for row in rows]
    return {
        "messages": [_out(row) for row in rows],
        "order": order.lower(),
        # page towards older messages / towards newer ones
        "before": str(min(ids)) if ids and (order == "ASC" or more) else None,
        "after": str(max(ids)) if ids and (order == "DESC" or more) else None,
        "has_more": more,
    }


def _message_filter(request: Request) -> store.Filter:
    params = request.query_params
    company_id = company_filter(request, query_id(request, "company_id"))
    campaign_id = query_id(request, "campaign_id")
    contact = params.get("contact")
    digits = None
    if contact:
        try:
            digits = normalize_phone(contact)
        except ValueError:
            raise ApiError(400, "contact must be a phone number (7 to 15 digits)") from None
    chosen: dict[str, str | None] = {}
    for name, allowed in (("direction", DIRECTIONS), ("status", STATUSES)):
        value = params.get(name)
        if value and value not in allowed:
            raise ApiError(400, f"{name} must be one of {', '.join(sorted(allowed))}")
        chosen[name] = value or None
    external_id = params.get("external_id") or None
    if external_id is not None and not 1 <= len(external_id) <= 200:
        raise ApiError(400, "external_id must be 1 to 200 characters")
    return store.Filter(
        external_id=external_id,
        company_id=company_id,
        campaign_id=campaign_id,
        contact=digits,
        direction=chosen["direction"],
        status=chosen["status"],
    )


def page_bounds(request: Request) -> tuple[int | None, int | None, int]:
    after = query_id(request, "after")
    before = query_id(request, "before")
    return after, before, query_int(request, "limit", default=50, low=1, high=MAX_PAGE)


async def list_messages(request: Request) -> Response:
    """``GET /api/messages?company_id=&contact=&direction=in|out&status=&campaign_id=&external_id=&after=|before=``
    ``&limit=``: newest first (``before=<id>`` pages back), or oldest first from ``after=<id>`` (pages forward);
    ``external_id`` finds a message by its provider id (a wamid)."""
    flt = _message_filter(request)
    after, before, limit = page_bounds(request)
    async with context(request).pool.connection() as conn:
        return json_response(await message_page(conn, flt, after=after, before=before, limit=limit))


async def retry_message(request: Request) -> Response:
    """``POST /api/messages/{id}/retry``: a failed message sent again → 200 with the message, queued.

    Fresh attempts; its failure is kept in ``history``; a campaign message's ``failed_count`` is given back (it
    counts in ``sent_count`` once sent). 409 with the reason when the message is not failed, or must not be
    sent now (see :mod:`libs.messages.actions`); 503 (and the message failed as before) when the queue is down.
    """
    ctx = context(request)
    message_id = path_id(request)

    async def owner() -> dict[str, Any] | None:
        async with ctx.pool.connection() as conn:
            return await store.get(conn, message_id)

    await check_owner(request, owner, "message", message_id)
    row, job = await actions.retry_message(ctx.pool, ctx.redis, ctx.namespace, message_id)
    return json_response({**_out(row), "job_id": job.message_id})
