"""What a user does with connections — one function each (the API's handlers call them).

Secrets go in, never out: every row returned has ``has_access_token`` / ``has_bridge_api_key`` instead, and
they are stored encrypted (:mod:`libs.secrets`). The one exception is a Baileys connection's own webhook secret:
answered once, when it is made (at creation, or issued again by :func:`issue_webhook_secret`).
A bridge URL must pass the outbound address guard when it is saved (:mod:`libs.outbound`; the sender checks
the address again at every connection). Refusals are :mod:`libs.refusals` errors.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from libs.companies import store as companies
from libs.connections import store
from libs.ingest import unmatched
from libs.outbound import AddressGuard
from libs.refusals import ConflictError, InvalidError, NotFoundError
from libs.secrets import Secrets, new_webhook_key, new_webhook_secret
from libs.templates import store as templates

logger = logging.getLogger(__name__)

#: The credentials each provider's connection uses.
CREDENTIALS = {"meta": ("access_token",), "baileys": ("bridge_url", "bridge_api_key")}
#: Where a Baileys connection's bridge posts its webhooks (on the webhook-ingest edge).
WEBHOOK_PATH = "/webhooks/baileys/{key}"


async def _check_bridge_url(guard: AddressGuard, url: str | None) -> None:
    """:class:`InvalidError` (422) for a bridge URL the outbound guard refuses (resolved now)."""
    if url is None:
        return
    try:
        await guard.check_url_resolved(url)
    except ValueError as exc:
        raise InvalidError(f"bridge_url refused: {exc}") from None


def _encrypted(secrets: Secrets, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every secret column encrypted."""
    return {
        name: secrets.encrypt_optional(value) if name in store.SECRET_COLUMNS else value
        for name, value in values.items()
    }


def _webhook(key: str, secret: str) -> dict[str, str]:
    """What a bridge needs to post to its connection's own webhook URL (shown once)."""
    return {"webhook_path": WEBHOOK_PATH.format(key=key), "webhook_secret": secret}


def _conflict(exc: pg_errors.UniqueViolation) -> ConflictError:
    constraint = exc.diag.constraint_name or ""
    if "phone_number_id" in constraint:
        return ConflictError("another connection already uses this phone_number_id")
    if "bridge_instance" in constraint:
        return ConflictError("another connection already uses this bridge_instance")
    return ConflictError("conflicts with an existing connection")


async def create_connection(
    pool: AsyncConnectionPool[Any],
    redis: aioredis.Redis,
    namespace: str,
    values: dict[str, Any],
    *,
    secrets: Secrets,
    guard: AddressGuard,
) -> dict[str, Any]:
    """A new connection (``values``: the columns of :data:`libs.connections.store.INSERTED`, secrets in clear);
    then the webhooks kept for its number or instance are enqueued (if that fails, the scheduler's sweep
    enqueues them). A Baileys connection gets its own webhook URL and secret, in the answer this once."""
    await _check_bridge_url(guard, values.get("bridge_url"))
    values = dict(values)
    webhook: dict[str, str] = {}
    if values["provider"] == "baileys":
        values["webhook_key"], secret = new_webhook_key(), new_webhook_secret()
        values["webhook_secret"] = secret
        webhook = _webhook(values["webhook_key"], secret)
    async with pool.connection() as conn:
        if not await companies.exists(conn, values["company_id"]):
            raise InvalidError(f"company {values['company_id']} does not exist")
        try:
            row = await store.insert(conn, _encrypted(secrets, values))
        except pg_errors.UniqueViolation as exc:
            raise _conflict(exc) from None
    provider = values["provider"]
    key = values.get("phone_number_id") if provider == "meta" else values.get("bridge_instance")
    if key is not None:
        try:  # after the connection's commit: see libs.ingest.unmatched for why this order is safe
            await unmatched.enqueue_kept_async(pool, redis, namespace, provider, key)
        except Exception:
            logger.warning("connection %s created; its kept webhooks are left to the sweep", row["id"], exc_info=True)
    return {**row, **webhook}


async def get_connection(pool: AsyncConnectionPool[Any], connection_id: int) -> dict[str, Any]:
    """One connection (no secrets); :class:`NotFoundError` when missing."""
    async with pool.connection() as conn:
        row = await store.get(conn, connection_id)
    if row is None:
        raise NotFoundError(f"no connection {connection_id}")
    return dict(row)


async def patch_connection(
    pool: AsyncConnectionPool[Any],
    connection_id: int,
    changes: dict[str, Any],
    *,
    secrets: Secrets,
    guard: AddressGuard,
) -> dict[str, Any]:
    """Change the given fields (``status: active`` reactivates; secrets in clear, stored encrypted).

    New credentials (token, bridge address or key) for a connection that needs attention reactivate it too:
    that is what it needed. Sends held for an inactive connection go out once it is active again. A new
    ``waba_id`` forgets the template catalogue of the old one: template sends go unchecked until the scheduler
    (at once) or ``zapq templates sync`` reads the new one.
    """
    changes = dict(changes)
    current = await get_connection(pool, connection_id)
    own = CREDENTIALS[current["provider"]]
    foreign = {"access_token", "bridge_url", "bridge_api_key"} - set(own)
    stray = sorted(foreign & changes.keys())
    if stray:
        raise InvalidError(f"{', '.join(stray)} do not apply to a {current['provider']} connection")
    if "status" not in changes and current["status"] == "needs_attention" and set(own) & changes.keys():
        changes["status"] = "active"  # it needed new credentials, and got them
    await _check_bridge_url(guard, changes.get("bridge_url"))
    status = changes.pop("status", None)
    async with pool.connection() as conn, conn.transaction():
        if changes:
            await store.update(conn, connection_id, _encrypted(secrets, changes))
        if "waba_id" in changes and changes["waba_id"] != current["waba_id"]:  # another WABA: its own templates
            await templates.forget(conn, connection_id)
        if status is not None:
            await store.set_status(conn, connection_id, status, None)
        row = await store.get(conn, connection_id)
    assert row is not None
    return row


async def deactivate_connection(pool: AsyncConnectionPool[Any], connection_id: int) -> dict[str, Any]:
    """Make a connection inactive: the sender holds its messages until it is active again."""
    async with pool.connection() as conn, conn.transaction():
        await store.set_status(conn, connection_id, "inactive", "deactivated through the API")
        row = await store.get(conn, connection_id)
    if row is None:
        raise NotFoundError(f"no connection {connection_id}")
    return row


async def issue_webhook_secret(
    pool: AsyncConnectionPool[Any], connection_id: int, *, secrets: Secrets
) -> dict[str, Any]:
    """A new webhook URL and secret for a Baileys connection (answered this once); the previous ones stop
    working at once. The migration path of connections made before per-connection secrets existed."""
    current = await get_connection(pool, connection_id)
    if current["provider"] != "baileys":
        raise InvalidError("only a baileys connection has a webhook secret")
    key, secret = new_webhook_key(), new_webhook_secret()
    async with pool.connection() as conn:
        await store.update(conn, connection_id, {"webhook_key": key, "webhook_secret": secrets.encrypt(secret)})
        row = await store.get(conn, connection_id)
    assert row is not None
    return {**row, **_webhook(key, secret)}
