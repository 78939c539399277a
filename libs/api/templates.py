"""WhatsApp templates: each Meta connection's catalogue (synced from its WABA), listed and synced on demand.

The sync and its guarantees are :mod:`libs.templates.actions`; how sends are checked against a catalogue is
:mod:`libs.templates.catalogue`. These handlers parse and render.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_owner, check_row, company_filter
from libs.api.http import ApiError, context, json_response, query_id, query_int, read_model
from libs.api.query import TEMPLATE_AFTER_PATTERN, TEMPLATE_STATUS_PATTERN
from libs.api.schemas import TemplateSyncIn
from libs.connections import store as connections
from libs.refusals import InvalidError, RefusedError
from libs.templates import actions

MAX_PAGE = 1_000
STATUS = re.compile(TEMPLATE_STATUS_PATTERN)
AFTER = re.compile(TEMPLATE_AFTER_PATTERN)
#: The start of the listing: before every (connection, name, language).
START: tuple[int, str, str] = (0, "", "")


def _after(value: str | None) -> tuple[int, str, str]:
    """``after=<connection_id>:<name>:<language>`` (the previous page's ``after``) as a key."""
    if not value:
        return START
    found = AFTER.fullmatch(value)
    if found is None:
        raise ApiError(400, "after must be the after value of the previous page")
    return int(found.group(1)), found.group(2), found.group(3)


async def list_templates(request: Request) -> Response:
    """``GET /api/templates?company_id=&connection_id=&status=&after=&limit=``: the catalogue by connection,
    name and language (``status``: APPROVED, PAUSED, …), with the cursor of the next page; with a
    ``connection_id``, its ``catalogue`` too (``checked``: template sends are checked; last sync and error)."""
    company = company_filter(request, query_id(request, "company_id"))
    connection_id = query_id(request, "connection_id")
    status = request.query_params.get("status") or None
    if status is not None and not STATUS.fullmatch(status):
        raise ApiError(400, "status must be a template status such as APPROVED, PENDING, REJECTED or PAUSED")
    state = None
    if connection_id is not None:
        state = await actions.catalogue_state(context(request).pool, connection_id)
        check_row(request, state, "connection", connection_id)
    rows, more = await actions.list_templates(
        context(request).pool,
        company_id=company,
        connection_id=connection_id,
        status=status.upper() if status else None,
        after=_after(request.query_params.get("after")),
        limit=query_int(request, "limit", default=100, low=1, high=MAX_PAGE),
    )
    last = rows[-1] if rows else None
    after = f"{last['connection_id']}:{last['name']}:{last['language']}" if last and more else None
    answer: dict[str, Any] = {"templates": rows, "has_more": more, "after": after}
    if state is not None:
        answer["catalogue"] = state
    return json_response(answer)


async def sync_templates(request: Request) -> Response:
    """``POST /api/templates/sync`` ``{"connection_id": N}`` (one connection: its errors are the answer, 404 / 422 /
    502) or ``{"company_id": N}`` / ``{}`` (every Meta connection with a ``waba_id`` of the company, or of all:
    each result or error in ``results``)."""
    body = await read_model(request, TemplateSyncIn, empty=TemplateSyncIn())
    ctx = context(request)
    if body.connection_id is not None:
        connection_id = body.connection_id

        async def owner() -> dict[str, Any] | None:
            async with ctx.pool.connection() as conn:
                return await connections.owner(conn, connection_id)

        await check_owner(request, owner, "connection", connection_id)
        return json_response({"results": [await _sync(request, connection_id)]})
    targets = await actions.sync_targets(ctx.pool, company_filter(request, body.company_id))
    if not targets:
        raise InvalidError("no Meta connection with a waba_id to sync")
    results: list[dict[str, Any]] = []
    for connection_id in targets:
        try:
            results.append(await _sync(request, connection_id))
        except RefusedError as exc:
            results.append({"connection_id": connection_id, "error": str(exc), "status": exc.status})
    return json_response({"results": results})


async def _sync(request: Request, connection_id: int) -> dict[str, Any]:
    """Sync one connection in a worker thread (the sync is written for the scheduler too), then forget this
    process's cached copy of its catalogue."""
    ctx = context(request)
    try:
        return await run_in_threadpool(
            actions.sync_connection, ctx.db, ctx.graph_http, ctx.graph, ctx.secrets, connection_id
        )
    finally:
        ctx.templates.invalidate(connection_id)
