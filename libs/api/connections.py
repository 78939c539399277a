"""WhatsApp connections (Meta numbers, Baileys-bridge instances). Secrets go in, never out.

Creating one applies the webhooks kept for its number or instance (:mod:`libs.ingest.unmatched`).
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import errors as pg_errors
from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import ApiError, context, json_response, path_id, read_model
from libs.api.schemas import ConnectionIn, ConnectionPatch
from libs.events.sql import SET_CONNECTION_STATUS
from libs.ingest import unmatched

logger = logging.getLogger(__name__)

#: Every column but the secrets, plus whether each secret is set.
COLUMNS = """id, company_id, name, provider, status, status_reason, phone_number_id, waba_id, display_phone_number,
bridge_url, bridge_instance, rate_per_second, created_at, updated_at,
access_token IS NOT NULL AS has_access_token, bridge_api_key IS NOT NULL AS has_bridge_api_key"""

INSERTED = (
    "company_id",
    "provider",
    "name",
    "phone_number_id",
    "access_token",
    "waba_id",
    "display_phone_number",
    "bridge_url",
    "bridge_instance",
    "bridge_api_key",
    "rate_per_second",
)


def _conflict(exc: pg_errors.UniqueViolation) -> ApiError:
    constraint = exc.diag.constraint_name or ""
    if "phone_number_id" in constraint:
        return ApiError(409, "another connection already uses this phone_number_id")
    if "bridge_instance" in constraint:
        return ApiError(409, "another connection already uses this bridge_instance")
    return ApiError(409, "conflicts with an existing connection")


async def create_connection(request: Request) -> Response:
    """``POST /api/connections`` → 201 (secrets stored, answered as ``has_…: true``); then the webhooks kept
    for its number or instance are enqueued (if that fails, the scheduler's sweep enqueues them)."""
    body = await read_model(request, ConnectionIn)
    values = {name: getattr(body, name) for name in INSERTED}
    placeholders = ", ".join(f"%({name})s" for name in INSERTED)
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        company = await (await conn.execute("SELECT 1 FROM companies WHERE id = %s", (body.company_id,))).fetchone()
        if company is None:
            raise ApiError(422, f"company {body.company_id} does not exist")
        try:
            cursor = await conn.execute(
                f"INSERT INTO connections ({', '.join(INSERTED)}) VALUES ({placeholders}) RETURNING {COLUMNS}",
                values,
            )
        except pg_errors.UniqueViolation as exc:
            raise _conflict(exc) from None
        row = await cursor.fetchone()
    assert row is not None
    key = body.phone_number_id if body.provider == "meta" else body.bridge_instance
    if key is not None:
        try:  # after the connection's commit: see libs.ingest.unmatched for why this order is safe
            await unmatched.enqueue_kept_async(ctx.pool, ctx.redis, ctx.namespace, body.provider, key)
        except Exception:
            logger.warning("connection %s created; its kept webhooks are left to the sweep", row["id"], exc_info=True)
    return json_response(row, 201)


async def list_connections(request: Request) -> Response:
    """``GET /api/connections[?company_id=N]`` (health included: status and its reason)."""
    company = request.query_params.get("company_id")
    if company is not None and not company.isdigit():
        raise ApiError(400, "company_id must be a number")
    async with context(request).pool.connection() as conn:
        if company is None:
            cursor = await conn.execute(f"SELECT {COLUMNS} FROM connections ORDER BY id LIMIT 1000")
        else:
            cursor = await conn.execute(
                f"SELECT {COLUMNS} FROM connections WHERE company_id = %s ORDER BY id LIMIT 1000", (int(company),)
            )
        return json_response(await cursor.fetchall())


async def get_connection(request: Request) -> Response:
    """``GET /api/connections/{id}``."""
    return json_response(await _fetch(request, path_id(request)))


async def _fetch(request: Request, connection_id: int) -> dict[str, Any]:
    async with context(request).pool.connection() as conn:
        row = await (
            await conn.execute(f"SELECT {COLUMNS} FROM connections WHERE id = %s", (connection_id,))
        ).fetchone()
    if row is None:
        raise ApiError(404, f"no connection {connection_id}")
    return dict(row)


async def patch_connection(request: Request) -> Response:
    """``PATCH /api/connections/{id}``: change the given fields (``status: active`` reactivates).

    New credentials (token, bridge address or key) for a connection that needs attention reactivate it too:
    that is what it needed. Sends held for an inactive connection go out once it is active again.
    """
    connection_id = path_id(request)
    body = await read_model(request, ConnectionPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    current = await _fetch(request, connection_id)
    own = ("access_token",) if current["provider"] == "meta" else ("bridge_url", "bridge_api_key")
    foreign = {"access_token", "bridge_url", "bridge_api_key"} - set(own)
    stray = sorted(foreign & changes.keys())
    if stray:
        raise ApiError(422, f"{', '.join(stray)} do not apply to a {current['provider']} connection")
    if "status" not in changes and current["status"] == "needs_attention" and set(own) & changes.keys():
        changes["status"] = "active"  # it needed new credentials, and got them
    status = changes.pop("status", None)
    async with context(request).pool.connection() as conn, conn.transaction():
        if changes:
            assignments = ", ".join(f"{name} = %({name})s" for name in changes)
            await conn.execute(
                f"UPDATE connections SET {assignments}, updated_at = now() WHERE id = %(id)s",
                {**changes, "id": connection_id},
            )
        if status is not None:
            await conn.execute(SET_CONNECTION_STATUS, {"id": connection_id, "status": status, "reason": None})
        cursor = await conn.execute(f"SELECT {COLUMNS} FROM connections WHERE id = %s", (connection_id,))
        return json_response(await cursor.fetchone())


async def deactivate_connection(request: Request) -> Response:
    """``POST /api/connections/{id}/deactivate``: the sender holds its messages until it is active again."""
    connection_id = path_id(request)
    async with context(request).pool.connection() as conn, conn.transaction():
        await conn.execute(
            SET_CONNECTION_STATUS,
            {"id": connection_id, "status": "inactive", "reason": "deactivated through the API"},
        )
        cursor = await conn.execute(f"SELECT {COLUMNS} FROM connections WHERE id = %s", (connection_id,))
        row = await cursor.fetchone()
    if row is None:
        raise ApiError(404, f"no connection {connection_id}")
    return json_response(row)
