"""WhatsApp connections (Meta numbers, Baileys-bridge instances). Secrets go in, never out.

Creating one applies the webhooks kept for its number or instance (:mod:`libs.ingest.unmatched`). The work is
done by :mod:`libs.connections.actions`; these handlers parse and render.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import ApiError, context, json_response, path_id, read_model
from libs.api.schemas import ConnectionIn, ConnectionPatch
from libs.connections import actions, store


async def create_connection(request: Request) -> Response:
    """``POST /api/connections`` → 201 (secrets stored encrypted, answered as ``has_…: true``; a Baileys
    connection's own ``webhook_path`` and ``webhook_secret`` are in this answer only); then the webhooks kept
    for its number or instance are enqueued (if that fails, the scheduler's sweep enqueues them). A bridge URL
    the outbound guard refuses → 422."""
    body = await read_model(request, ConnectionIn)
    ctx = context(request)
    values = {name: getattr(body, name) for name in store.INSERTED if name in type(body).model_fields}
    row = await actions.create_connection(
        ctx.pool, ctx.redis, ctx.namespace, values, secrets=ctx.secrets, guard=ctx.guard
    )
    return json_response(row, 201)


async def list_connections(request: Request) -> Response:
    """``GET /api/connections[?company_id=N]`` (health included: status and its reason)."""
    company = request.query_params.get("company_id")
    if company is not None and not company.isdigit():
        raise ApiError(400, "company_id must be a number")
    async with context(request).pool.connection() as conn:
        return json_response(await store.listed(conn, int(company) if company is not None else None))


async def get_connection(request: Request) -> Response:
    """``GET /api/connections/{id}``."""
    return json_response(await actions.get_connection(context(request).pool, path_id(request)))


async def patch_connection(request: Request) -> Response:
    """``PATCH /api/connections/{id}``: change the given fields (``status: active`` reactivates).

    New credentials (token, bridge address or key) for a connection that needs attention reactivate it too:
    that is what it needed. Sends held for an inactive connection go out once it is active again.
    """
    connection_id = path_id(request)
    body = await read_model(request, ConnectionPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    ctx = context(request)
    return json_response(
        await actions.patch_connection(ctx.pool, connection_id, changes, secrets=ctx.secrets, guard=ctx.guard)
    )


async def issue_webhook_secret(request: Request) -> Response:
    """``POST /api/connections/{id}/webhook-secret``: a new webhook URL and secret for a Baileys connection,
    answered this once (the previous ones stop working)."""
    ctx = context(request)
    return json_response(await actions.issue_webhook_secret(ctx.pool, path_id(request), secrets=ctx.secrets))


async def deactivate_connection(request: Request) -> Response:
    """``POST /api/connections/{id}/deactivate``: the sender holds its messages until it is active again."""
    return json_response(await actions.deactivate_connection(context(request).pool, path_id(request)))
