"""What a user does with webhook endpoints — one function each, shared by the API and the CLI (through it).

Each takes an async Postgres connection (autocommit) and raises :class:`EndpointError` (with an HTTP-like
status) for anything the caller must refuse; the API turns those into answers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from libs.events import dispatch, signing, store
from libs.events.client import EndpointClient
from libs.events.kicks import Kicks
from libs.events.types import PING, parse_event_id, unknown_types
from libs.outbound import AddressGuard

#: How long a rotated-out secret keeps signing (second signature), so receivers can switch without a gap.
ROTATION_GRACE = dt.timedelta(hours=24)


class EndpointError(Exception):
    """A request about endpoints that must be refused: ``status`` (404, 409, 422) and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Endpoints:
    """The endpoint actions, with what they need: the outbound guard, Redis (to wake pumps), HTTP (tests)."""

    guard: AddressGuard
    redis: aioredis.Redis
    kicks: Kicks

    async def _checked_url(self, url: str) -> str:
        try:
            await self.guard.check_url_resolved(url)
        except ValueError as exc:
            raise EndpointError(422, f"url: {exc}") from None
        return url

    @staticmethod
    def _checked_types(types: list[str]) -> list[str]:
        unknown = unknown_types(types)
        if unknown:
            raise EndpointError(422, f"event_types: unknown event type(s) {', '.join(unknown)}")
        return sorted(set(types))

    async def create(self, conn: AsyncConnection[Any], values: dict[str, Any]) -> dict[str, Any]:
        """A new endpoint (enabled); the answer carries its secret — the only time it is shown."""
        company = await (await conn.execute(store.COMPANY_EXISTS, (values["company_id"],))).fetchone()
        if company is None:
            raise EndpointError(422, f"company {values['company_id']} does not exist")
        url = await self._checked_url(values["url"])
        secret = signing.new_secret()
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(
            store.INSERT_ENDPOINT,
            {
                "company_id": values["company_id"],
                "url": url,
                "description": values.get("description") or "",
                "types": Jsonb(self._checked_types(values.get("event_types") or [])),
                "enabled": values.get("enabled", True),
                "secret": secret,
                "rate": values.get("rate_per_second") or 200,
                "in_flight": values.get("max_in_flight") or 64,
            },
        )
        row = await cursor.fetchone()
        assert row is not None
        return {**row, "secret": secret}

    async def get(self, conn: AsyncConnection[Any], endpoint_id: int, company_id: int | None = None) -> dict[str, Any]:
        """One endpoint with its delivery figures (404 when missing or of another company)."""
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(store.GET_ENDPOINT, (endpoint_id,))
        row = await cursor.fetchone()
        if row is None or (company_id is not None and row["company_id"] != company_id):
            raise EndpointError(404, f"no webhook endpoint {endpoint_id}")
        return (await self._with_stats(conn, [row]))[0]

    async def list_all(self, conn: AsyncConnection[Any], company_id: int | None = None) -> list[dict[str, Any]]:
        """Endpoints (of one company, or all) with their delivery figures."""
        cursor = conn.cursor(row_factory=dict_row)
        if company_id is None:
            await cursor.execute(store.LIST_ENDPOINTS)
        else:
            await cursor.execute(store.LIST_COMPANY_ENDPOINTS, (company_id,))
        return await self._with_stats(conn, await cursor.fetchall())

    @staticmethod
    async def _with_stats(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return rows
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(store.ENDPOINT_STATS, {"ids": [r["id"] for r in rows]})
        stats = {s["id"]: s for s in await cursor.fetchall()}
        out = []
        for row in rows:
            s = stats[row["id"]]
            rate = round(s["succeeded_24h"] / s["attempts_24h"], 4) if s["attempts_24h"] else None
            out.append(
                {
                    **row,
                    "backlog": s["backlog"],
                    "failed_deliveries": s["failed"],
                    "attempts_24h": s["attempts_24h"],
                    "success_rate_24h": rate,
                }
            )
        return out

    async def update(self, conn: AsyncConnection[Any], endpoint_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the given fields; enabling a disabled endpoint resumes its deliveries."""
        current = await self.get(conn, endpoint_id)
        values = dict(changes)
        if "url" in values:
            values["url"] = await self._checked_url(values["url"])
        if "event_types" in values:
            values["event_types"] = Jsonb(self._checked_types(values["event_types"] or []))
        if values.get("enabled") is True:
            values.update(disabled_reason=None, disabled_at=None, failing_since=None)
        elif values.get("enabled") is False and current["enabled"]:
            values.update(disabled_reason="disabled through the API", disabled_at=dt.datetime.now(dt.UTC))
        if values:
            await conn.execute(store.update_endpoint(list(values)), {**values, "id": endpoint_id})
        if values.get("enabled") is True:
            await self.kicks.kick_async(self.redis, [endpoint_id])
        return await self.get(conn, endpoint_id)

    async def delete(self, conn: AsyncConnection[Any], endpoint_id: int) -> None:
        """Remove the endpoint and its delivery log."""
        await self.get(conn, endpoint_id)
        await conn.execute(store.DELETE_ENDPOINT, (endpoint_id,))

    async def rotate_secret(self, conn: AsyncConnection[Any], endpoint_id: int) -> dict[str, Any]:
        """A new secret (shown once); the old one keeps signing beside it for ``ROTATION_GRACE``."""
        await self.get(conn, endpoint_id)
        secret = signing.new_secret()
        expires = dt.datetime.now(dt.UTC) + ROTATION_GRACE
        await conn.execute(store.ROTATE_SECRET, (expires, secret, endpoint_id))
        return {**await self.get(conn, endpoint_id), "secret": secret, "previous_secret_expires_at": expires}

    async def test(self, conn: AsyncConnection[Any], http: EndpointClient, endpoint_id: int) -> dict[str, Any]:
        """Send a signed ``ping`` event to the endpoint now and report what it answered (nothing is stored)."""
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(store.ENDPOINT, {"id": endpoint_id})
        row = await cursor.fetchone()
        if row is None:
            raise EndpointError(404, f"no webhook endpoint {endpoint_id}")
        now = dt.datetime.now(dt.UTC)
        endpoint = dispatch.Endpoint.from_row(row, now)
        message_id = f"ping_{int(now.timestamp() * 1000):x}"
        payload = signing.body(PING, now, {"endpoint_id": endpoint_id, "company_id": endpoint.company_id})
        result = await dispatch.attempt(http, endpoint.url, message_id, payload, endpoint.secrets, timeout_s=10.0)
        return {
            "webhook_id": message_id,
            "ok": result.ok,
            "status_code": result.status,
            "error": result.error,
            "latency_ms": result.latency_ms,
            "response": result.excerpt,
        }

    async def replay(
        self,
        conn: AsyncConnection[Any],
        endpoint_id: int,
        *,
        event: str | None = None,
        since: dt.datetime | None = None,
        only_failed: bool = False,
    ) -> int:
        """Deliver again one event (``evt_…``), or every event of the endpoint since a time (delivered, failed
        or never sent to it — ``only_failed`` keeps it to the failed ones); returns how many were queued."""
        await self.get(conn, endpoint_id)
        params: dict[str, Any] = {"endpoint": endpoint_id, "only_failed": only_failed}
        if event is not None:
            internal = parse_event_id(event)
            if internal is None:
                raise EndpointError(422, f"event_id: {event!r} is not an event id (evt_…)")
            params["event"] = internal
            where = "ev.id = %(event)s"
        elif since is not None:
            params["since"] = since
            where = "ev.occurred_at >= %(since)s"
        else:
            raise EndpointError(422, "give event_id or since")
        async with conn.transaction():
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(store.REPLAY_DELIVERIES.format(where=where), params)
            reopened = await cursor.fetchall()
            if event is not None and not reopened:
                await cursor.execute(store.DELIVERY_STATE, (endpoint_id, params["event"]))
                found = await cursor.fetchone()
                if found is None:  # the endpoint exists, the event the body names does not: a bad input
                    why = f"event_id: no published event {event} for this endpoint's company and types"
                    raise EndpointError(422, why)
                raise EndpointError(409, f"event {event} is still being delivered to this endpoint ({found[0]})")
            kick: list[int] = []
            if reopened:
                kick = await dispatch.promote(conn, {(e, c) for e, c, _ in reopened})
                message_ids = [dispatch.redelivery_message(d).message_id for _, _, d in reopened]
                await cursor.execute(store.SETTLE_DEAD_LETTERS, {"message_ids": message_ids})
        await self.kicks.kick_async(self.redis, kick)
        return len(reopened)

    async def attempts(self, conn: AsyncConnection[Any], event: str) -> list[dict[str, Any]]:
        """Every delivery of an event and its attempts (newest first), for the dashboard and ``zapq``."""
        internal = parse_event_id(event)
        if internal is None:
            raise EndpointError(404, f"no event {event}")
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(store.EVENT_ATTEMPTS, (internal,))
        return await cursor.fetchall()
