"""What a user does with webhook endpoints — one function each, shared by the API and the CLI (through it).

Each takes an async Postgres connection (autocommit) and raises :class:`EndpointError` (with an HTTP-like
status) for anything the caller must refuse; the API turns those into answers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis
from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from libs.events import dispatch, signing, store
from libs.events.kicks import Kicks
from libs.events.types import PING, parse_event_id, unknown_types
from libs.outbound import AddressGuard

#: How long a rotated-out secret keeps signing (second signature), so receivers can switch without a gap.
ROTATION_GRACE = dt.timedelta(hours=24)

COLUMNS = """id, company_id, url, description, event_types, enabled, disabled_reason, disabled_at, rate_per_second,
max_in_flight, failing_since, last_success_at, last_failure_at, last_failure_reason, created_at, updated_at"""

#: Delivery figures of endpoints: open backlog, attempts and successes of the last 24 hours.
STATS = """
SELECT w.id,
  (SELECT count(*) FROM event_deliveries d WHERE d.endpoint_id = w.id
     AND d.state IN ('waiting', 'pending', 'delivering')) AS backlog,
  (SELECT count(*) FROM event_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'failed') AS failed,
  (SELECT count(*) FROM delivery_attempts a WHERE a.endpoint_id = w.id
     AND a.attempted_at > now() - interval '24 hours') AS attempts_24h,
  (SELECT count(*) FROM delivery_attempts a WHERE a.endpoint_id = w.id
     AND a.attempted_at > now() - interval '24 hours' AND a.status_code BETWEEN 200 AND 299) AS succeeded_24h
FROM webhook_endpoints w WHERE w.id = ANY(%(ids)s)
"""

#: Create (or reopen) the deliveries of one endpoint for the published events that ``%(where)s`` selects.
REPLAY = """
INSERT INTO event_deliveries (endpoint_id, event_id, seq, conversation, state, next_attempt_at)
SELECT w.id, ev.id, ev.seq, ev.conversation, 'waiting', now()
FROM events ev JOIN webhook_endpoints w ON w.id = %(endpoint)s AND w.company_id = ev.company_id
 AND (jsonb_array_length(w.event_types) = 0 OR w.event_types ? ev.type)
WHERE ev.seq IS NOT NULL AND {where}
ON CONFLICT (event_id, endpoint_id) DO UPDATE
  SET state = 'waiting', attempts = 0, next_attempt_at = now(), lease_until = NULL
  WHERE event_deliveries.state IN ('delivered', 'failed') AND NOT %(only_failed)s
     OR event_deliveries.state = 'failed'
RETURNING endpoint_id, conversation, id
"""

#: Replaying a given-up delivery settles its dead letter (as a replay from the ledger would).
SETTLE_DEAD_LETTERS = """
UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1
WHERE message_id = ANY(%(message_ids)s) AND replayed_at IS NULL
"""


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
        company = await (
            await conn.execute("SELECT 1 FROM companies WHERE id = %s", (values["company_id"],))
        ).fetchone()
        if company is None:
            raise EndpointError(422, f"company {values['company_id']} does not exist")
        url = await self._checked_url(values["url"])
        secret = signing.new_secret()
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(
            f"""INSERT INTO webhook_endpoints (company_id, url, description, event_types, enabled, secret,
                                               rate_per_second, max_in_flight)
                VALUES (%(company_id)s, %(url)s, %(description)s, %(types)s, %(enabled)s, %(secret)s, %(rate)s,
                        %(in_flight)s)
                RETURNING {COLUMNS}""",
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
        await cursor.execute(f"SELECT {COLUMNS} FROM webhook_endpoints WHERE id = %s", (endpoint_id,))
        row = await cursor.fetchone()
        if row is None or (company_id is not None and row["company_id"] != company_id):
            raise EndpointError(404, f"no webhook endpoint {endpoint_id}")
        return (await self._with_stats(conn, [row]))[0]

    async def list_all(self, conn: AsyncConnection[Any], company_id: int | None = None) -> list[dict[str, Any]]:
        """Endpoints (of one company, or all) with their delivery figures."""
        cursor = conn.cursor(row_factory=dict_row)
        if company_id is None:
            await cursor.execute(f"SELECT {COLUMNS} FROM webhook_endpoints ORDER BY id LIMIT 1000")
        else:
            await cursor.execute(
                f"SELECT {COLUMNS} FROM webhook_endpoints WHERE company_id = %s ORDER BY id LIMIT 1000", (company_id,)
            )
        return await self._with_stats(conn, await cursor.fetchall())

    @staticmethod
    async def _with_stats(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return rows
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(STATS, {"ids": [r["id"] for r in rows]})
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
            assignments = ", ".join(f"{name} = %({name})s" for name in values)
            await conn.execute(
                f"UPDATE webhook_endpoints SET {assignments}, updated_at = now() WHERE id = %(id)s",
                {**values, "id": endpoint_id},
            )
        if values.get("enabled") is True:
            await self.kicks.kick_async(self.redis, [endpoint_id])
        return await self.get(conn, endpoint_id)

    async def delete(self, conn: AsyncConnection[Any], endpoint_id: int) -> None:
        """Remove the endpoint and its delivery log."""
        await self.get(conn, endpoint_id)
        await conn.execute("DELETE FROM webhook_endpoints WHERE id = %s", (endpoint_id,))

    async def rotate_secret(self, conn: AsyncConnection[Any], endpoint_id: int) -> dict[str, Any]:
        """A new secret (shown once); the old one keeps signing beside it for ``ROTATION_GRACE``."""
        await self.get(conn, endpoint_id)
        secret = signing.new_secret()
        expires = dt.datetime.now(dt.UTC) + ROTATION_GRACE
        await conn.execute(
            """UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = %s, secret = %s,
                   updated_at = now() WHERE id = %s""",
            (expires, secret, endpoint_id),
        )
        return {**await self.get(conn, endpoint_id), "secret": secret, "previous_secret_expires_at": expires}

    async def test(self, conn: AsyncConnection[Any], http: httpx.AsyncClient, endpoint_id: int) -> dict[str, Any]:
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
            await cursor.execute(REPLAY.format(where=where), params)
            reopened = await cursor.fetchall()
            if event is not None and not reopened:
                await cursor.execute(
                    "SELECT state FROM event_deliveries WHERE endpoint_id = %s AND event_id = %s",
                    (endpoint_id, params["event"]),
                )
                found = await cursor.fetchone()
                if found is None:
                    raise EndpointError(404, f"no published event {event} for this endpoint's company and types")
                raise EndpointError(409, f"event {event} is still being delivered to this endpoint ({found[0]})")
            kick: list[int] = []
            if reopened:
                kick = await dispatch.promote(conn, {(e, c) for e, c, _ in reopened})
                message_ids = [dispatch.redelivery_message(d).message_id for _, _, d in reopened]
                await cursor.execute(SETTLE_DEAD_LETTERS, {"message_ids": message_ids})
        await self.kicks.kick_async(self.redis, kick)
        return len(reopened)

    async def attempts(self, conn: AsyncConnection[Any], event: str) -> list[dict[str, Any]]:
        """Every delivery of an event and its attempts (newest first), for the dashboard and ``zapq``."""
        internal = parse_event_id(event)
        if internal is None:
            raise EndpointError(404, f"no event {event}")
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(
            """SELECT d.id AS delivery_id, d.endpoint_id, d.state, d.attempts, d.next_attempt_at, d.delivered_at,
                      a.attempt, a.attempted_at, a.status_code, a.error, a.latency_ms, a.response_excerpt
               FROM event_deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
               WHERE d.event_id = %s ORDER BY d.endpoint_id, a.attempted_at DESC NULLS LAST, a.id DESC""",
            (internal,),
        )
        return await cursor.fetchall()
