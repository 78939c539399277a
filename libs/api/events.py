"""Events for the CRM: webhook endpoints (push), the pull feed and the live stream (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_body_company, check_row, company_filter, principal
from libs.api.http import ApiError, context, json_response, path_id, query_id, query_int, read_model
from libs.api.schemas import EndpointIn, EndpointPatch, ReplayIn
from libs.events import store
from libs.events.feed import (
    MAX_LIMIT,
    MAX_WAIT_S,
    BadCursorError,
    Filter,
    Page,
    as_event,
    parse_cursor,
    read_last,
    types_filter,
)
from libs.events.types import parse_event_id, unknown_types

# -- endpoints ------------------------------------------------------------------------------------------


async def create_endpoint(request: Request) -> Response:
    """``POST /api/webhook-endpoints`` → 201 with the endpoint and its ``secret`` (``whsec_…``, shown once)."""
    body = await read_model(request, EndpointIn)
    check_body_company(request, body.company_id)
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        row = await ctx.endpoints.create(conn, body.model_dump())
    return json_response(row, 201, headers={"location": f"/api/webhook-endpoints/{row['id']}"})


async def list_endpoints(request: Request) -> Response:
    """``GET /api/webhook-endpoints[?company_id=N]``: with backlog, success rate and last failure."""
    company = company_filter(request, query_id(request, "company_id"))
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        return json_response(await ctx.endpoints.list_all(conn, company))


async def get_endpoint(request: Request) -> Response:
    """``GET /api/webhook-endpoints/{id}``."""
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        return json_response(await ctx.endpoints.get(conn, path_id(request), principal(request).company_id))


async def patch_endpoint(request: Request) -> Response:
    """``PATCH /api/webhook-endpoints/{id}``: change url, types, limits, description; enable or disable."""
    body = await read_model(request, EndpointPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        return json_response(await ctx.endpoints.update(conn, await _owned(request, conn), changes))


async def delete_endpoint(request: Request) -> Response:
    """``DELETE /api/webhook-endpoints/{id}`` → 204 (its deliveries go with it)."""
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        await ctx.endpoints.delete(conn, await _owned(request, conn))
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    """``POST /api/webhook-endpoints/{id}/rotate-secret``: a new secret (shown once); the previous one keeps
    signing too for 24 hours."""
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        return json_response(await ctx.endpoints.rotate_secret(conn, await _owned(request, conn)))


async def test_endpoint(request: Request) -> Response:
    """``POST /api/webhook-endpoints/{id}/test``: send a signed ``ping`` now; answers what the endpoint said."""
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        return json_response(await ctx.endpoints.test(conn, ctx.webhook_http, await _owned(request, conn)))


async def replay_endpoint(request: Request) -> Response:
    """``POST /api/webhook-endpoints/{id}/replay``: ``{"event_id": "evt_…"}`` or ``{"since": ISO}``."""
    body = await read_model(request, ReplayIn)
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        queued = await ctx.endpoints.replay(
            conn, await _owned(request, conn), event=body.event_id, since=body.since, only_failed=body.only_failed
        )
    return json_response({"queued": queued})


async def _owned(request: Request, conn: Any) -> int:
    """The endpoint id of the path; 404 when a company key's company does not own it."""
    endpoint_id = path_id(request)
    own = principal(request).company_id
    if own is not None:
        await context(request).endpoints.get(conn, endpoint_id, own)
    return endpoint_id


# -- the feed -------------------------------------------------------------------------------------------


def _filter(request: Request) -> Filter:
    types = types_filter(request.query_params.get("types"))
    unknown = unknown_types(list(types))
    if unknown:
        raise ApiError(400, f"unknown event type(s): {', '.join(unknown)}")
    return Filter(company_id=company_filter(request, query_id(request, "company_id")), types=types)


def _cursor(value: str | None, default: int) -> int:
    try:
        return parse_cursor(value, default=default)
    except BadCursorError as exc:
        raise ApiError(400, str(exc)) from None


async def list_events(request: Request) -> Response:
    """``GET /api/events?company_id=&after=&types=&limit=&wait=``: published events after the cursor, oldest
    first. ``wait`` (seconds, up to 30) long-polls: the answer comes as soon as a matching event is published.
    Continue with ``next_cursor``. ``last=N`` instead of ``after``: the newest N events (oldest first) and the
    cursor past everything published — where a reader that wants only what is recent starts."""
    flt = _filter(request)
    last = query_int(request, "last", default=0, low=1, high=MAX_LIMIT)
    if last:
        if "after" in request.query_params or "wait" in request.query_params:
            raise ApiError(400, "last reads the newest events: give it without after or wait")
        return _page_response(await read_last(context(request).pool, flt, last))
    after = _cursor(request.query_params.get("after"), 0)
    limit = query_int(request, "limit", default=100, low=1, high=MAX_LIMIT)
    wait = request.query_params.get("wait") or "0"  # empty: as if left out
    try:
        wait_s = float(wait)
    except ValueError:
        raise ApiError(400, f"wait must be a number of seconds from 0 to {MAX_WAIT_S:.0f}") from None
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise ApiError(400, f"wait must be a number of seconds from 0 to {MAX_WAIT_S:.0f}")
    return _page_response(await context(request).hub.wait_page(after, flt, limit, wait_s))


def _page_response(page: Page) -> Response:
    return json_response(
        {
            "events": [as_event(e) for e in page.events],
            "next_cursor": str(page.next_cursor),
            "has_more": page.has_more,
        }
    )


async def stream_events(request: Request) -> Response:
    """``GET /api/events/stream?company_id=&types=&after=``: Server-Sent Events, one per event (``id`` is its
    cursor, ``event`` its type, ``data`` the event as JSON). Resume with ``Last-Event-ID`` (or ``after``);
    without either the stream starts with the next event published. Keep-alive comments every 15 s."""
    ctx = context(request)
    flt = _filter(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("after")
    after = _cursor(resume, ctx.hub.last_seq)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for row in ctx.hub.follow(after, flt):
            event = as_event(row)
            yield ServerSentEvent(data=orjson.dumps(event).decode(), event=event["type"], id=event["cursor"], sep="\n")

    return EventSourceResponse(events(), ping=ctx.settings.event_stream_ping_seconds, sep="\n")


async def get_event(request: Request) -> Response:
    """``GET /api/events/{id}``: one event (``evt_…``) with every delivery attempt of it."""
    ctx = context(request)
    event_id = request.path_params["id"]
    internal = parse_event_id(event_id)
    if internal is None:
        raise ApiError(404, f"no event {event_id}")
    async with ctx.pool.connection() as conn:
        row = await store.published_event(conn, internal)
        check_row(request, row, "event", event_id)
        assert row is not None
        attempts = await ctx.endpoints.attempts(conn, event_id)
    return json_response({**as_event(row), "deliveries": _deliveries(attempts)})


def _deliveries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        delivery = out.setdefault(
            row["delivery_id"],
            {
                "endpoint_id": row["endpoint_id"],
                "state": row["state"],
                "attempts": row["attempts"],
                "next_attempt_at": row["next_attempt_at"] if row["state"] == "pending" else None,
                "delivered_at": row["delivered_at"],
                "log": [],
            },
        )
        if row["attempt"] is not None:
            delivery["log"].append(
                {
                    key: row[key]
                    for key in ("attempt", "attempted_at", "status_code", "error", "latency_ms", "response_excerpt")
                }
            )
    return list(out.values())
