"""WhatsApp connections (Meta numbers, Baileys-bridge instances). Secrets go in, never out.

Creating one applies the webhooks kept for its number or instance (:mod:`libs.ingest.unmatched`). The work is
done by :mod:`libs.connections.actions`; these handlers parse and render.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_body_company, check_owner, check_row, company_filter
from libs.api.http import context, json_response, path_id, query_id, read_model
from libs.api.schemas import ConnectionIn, ConnectionPatch
from libs.connections import actions, store


async def create_connection(request: Request) -> Response:
    """``POST /api/connections`` → 201 (secrets stored encrypted, answered as ``has_…: true``; a Baileys
    connection's own ``webhook_path`` and ``webhook_secret`` are in this answer only); then the webhooks kept
    for its number or instance are enqueued (if that fails, the scheduler's sweep enqueues them). A bridge URL
    the outbound guard refuses → 422."""
    body = await read_model(request, ConnectionIn)
    check_body_company(request, body.company_id)
    ctx = context(request)
    values = {name: getattr(body, name) for name in store.INSERTED if name in type(body).model_fields}
    row = await actions.create_connection(
        ctx.pool, ctx.redis, ctx.namespace, values, secrets=ctx.secrets, guard=ctx.guard
    )
    return json_response(row, 201)


async def list_connections(request: Request) -> Response:
    """``GET /api/connections[?company_id=N]`` (health included: status and its reason)."""
    company = company_filter(request, query_id(request, "company_id"))
    async with context(request).pool.connection() as conn:
        return json_response(await store.listed(conn, company))


async def get_connection(request: Request) -> Response:
    """``GET /api/connections/{id}``."""
    connection_id = path_id(request)
    row = await actions.get_connection(context(request).pool, connection_id)
    check_row(request, row, "connection", connection_id)
    return json_response(row)


async def patch_connection(request: Request) -> Response:
    """``PATCH /api/connections/{id}``: change the given fields (``status: active`` reactivates).

    New credentials (token, bridge address or key) for a connection that needs attention reactivate it too:
    that is what it needed. Sends held for an inactive connection go out once it is active again.
    """
    connection_id = path_id(request)
    await _check_owner(request, connection_id)
    body = await read_model(request, ConnectionPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    ctx = context(request)
    row = await actions.patch_connection(ctx.pool, connection_id, changes, secrets=ctx.secrets, guard=ctx.guard)
    if "waba_id" in changes:  # its catalogue may be forgotten: this process's copy too
        ctx.templates.invalidate(connection_id)
    return json_response(row)


async def issue_webhook_secret(request: Request) -> Response:
    """``POST /api/connections/{id}/webhook-secret``: a new webhook URL and secret for a Baileys connection,
    answered this once (the previous ones stop working)."""
    connection_id = path_id(request)
    await _check_owner(request, connection_id)
    ctx = context(request)
    return json_response(await actions.issue_webhook_secret(ctx.pool, connection_id, secrets=ctx.secrets))


async def deactivate_connection(request: Request) -> Response:
    """``POST /api/connections/{id}/deactivate``: the sender holds its messages until it is active again."""
    connection_id = path_id(request)
    await _check_owner(request, connection_id)
    return json_response(await actions.deactivate_connection(context(request).pool, connection_id))


async def _check_owner(request: Request, connection_id: int) -> None:
    async def owner() -> dict[str, Any] | None:
        async with context(request).pool.connection() as conn:
            return await store.get(conn, connection_id)

    await check_owner(request, owner, "connection", connection_id)
