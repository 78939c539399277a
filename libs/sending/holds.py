"""Held sends: parked while their connection is inactive (or its bridge disconnected) or their campaign paused.

A send that cannot go out because of the state of something else is not its own failure, and deferring it
again and again would spend the defer budget (~17 minutes) and the workers' time for as long as the hold
lasts. The sender *parks* a fresh copy of its job under the hold instead and acks the job:

    hold               parked while                          released when
    connection:<id>    the connection is ``inactive``        it is anything else (active; needs_attention:
                                                             the sender then fails it) or gone
    campaign:<id>      the campaign is ``paused``            it is anything else (running; cancelled: the
                                                             sender then cancels the message)

(A paused campaign's own low-tier sends park in its company's lane instead: :mod:`libs.campaigns.lanes`.)

Release is by polling committed state, not by the code paths that change it, so no way of ending a hold can
forget its sends (a bridge's ``connection.update`` ``open``, ``PATCH /api/connections/{id}``, an operator's
SQL) and no race with an uncommitted change can strand them: every sender process checks the holds that have
parked sends about once a second (:func:`release_ended_async`), and the scheduler does every minute
(:func:`release_ended`) in case no sender runs. Released sends go back to their own queue (low-tier ones to
their company's fair lane).

Every parked send has a deadline — its message's queue time plus the maximum hold age; past it the poll
releases it even though the hold lasts, and the sender, finding it still held and too old, fails it with the
hold as its reason (``HoldExpiredError``: dead-lettered, replayable).

Keys (:class:`libs.keys.HoldKeys`, under ``<namespace>:zapq:``): ``holds`` (set of holds with parked sends),
``holds:<hold>`` (sorted set of ``<queue>|<company>|<redis message id>`` by deadline), ``holds.msgs`` (redis
message id → payload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from dramatiq import Message
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from libs import contracts, lua
from libs.campaigns.lanes import Lanes
from libs.enqueue import prepared
from libs.keys import MSGS, BrokerKeys, HoldKeys, LaneKeys, LifecycleKeys
from libs.sending import store

CONNECTION = "connection"
CAMPAIGN = "campaign"

#: Moves parked sends back to their queue or lane (``libs/lua/holds_release.lua``); returns how many.
RELEASE = lua.source("holds_release")


def hold_name(kind: str, row_id: int) -> str:
    """``connection:<id>`` or ``campaign:<id>``."""
    return f"{kind}:{row_id}"


@dataclass(frozen=True)
class Holds:
    """The held sends of one namespace."""

    namespace: str

    @property
    def names(self) -> HoldKeys:
        """This namespace's hold keys."""
        return HoldKeys(self.namespace)

    def key(self, hold: str) -> str:
        """The sorted set of one hold's parked sends."""
        return self.names.hold(hold)

    def _release_args(self, mode: str, holds: list[str]) -> tuple[Any, ...]:
        names, lanes = self.names, LaneKeys(self.namespace, Lanes(self.namespace).queue)
        keys = (names.holds, names.messages)
        argv = (
            names.hold_prefix,
            BrokerKeys(self.namespace).queue_prefix,
            MSGS,
            lanes.queue,
            lanes.lane_prefix,
            lanes.backlog,
            lanes.members,
            lanes.ring,
            LifecycleKeys(self.namespace).seq_prefix,
            mode,
        )
        return (RELEASE, len(keys), *keys, *argv, *holds)

    async def park_async(
        self, client: aioredis.Redis, hold: str, message: Message[Any], *, company_id: int, deadline: float
    ) -> None:
        """Keep a fresh copy of send job ``message`` under ``hold`` until it ends or ``deadline`` (epoch s)."""
        [row] = prepared([message])
        pipe: Any = client.pipeline(transaction=True)
        pipe.hset(self.names.messages, row.redis_id, row.data)
        pipe.zadd(self.key(hold), {f"{row.queue}|{company_id}|{row.redis_id}": deadline})
        pipe.sadd(self.names.holds, hold)
        await pipe.execute()

    async def holds_async(self, client: aioredis.Redis) -> list[str]:
        """Holds with parked sends."""
        found: Any = await client.smembers(self.names.holds)  # type: ignore[misc]
        return sorted(h.decode() if isinstance(h, bytes) else str(h) for h in found)

    async def release_async(self, client: aioredis.Redis, holds: list[str]) -> int:
        """Put every send parked under ``holds`` back in its queue; returns how many."""
        if not holds:
            return 0
        moved: Any = await client.eval(*self._release_args("all", holds))  # type: ignore[misc]
        return int(moved)

    async def release_expired_async(self, client: aioredis.Redis) -> int:
        """Put every parked send past its deadline back in its queue (the sender then fails it); how many."""
        moved: Any = await client.eval(*self._release_args("expired", []))  # type: ignore[misc]
        return int(moved)

    def holds(self, client: redis.Redis) -> list[str]:
        """:meth:`holds_async`, sync."""
        found: Any = client.smembers(self.names.holds)
        return sorted(h.decode() if isinstance(h, bytes) else str(h) for h in found)

    def release(self, client: redis.Redis, holds: list[str]) -> int:
        """:meth:`release_async`, sync."""
        if not holds:
            return 0
        moved: Any = client.eval(*self._release_args("all", holds))
        return int(moved)

    def release_expired(self, client: redis.Redis) -> int:
        """:meth:`release_expired_async`, sync."""
        moved: Any = client.eval(*self._release_args("expired", []))
        return int(moved)

    def counts(self, client: redis.Redis) -> dict[str, int]:
        """Parked sends per hold (for stats and tests)."""
        counts: dict[str, int] = {}
        for hold in self.holds(client):
            count: Any = client.zcard(self.key(hold))
            counts[hold] = int(count)
        return counts


def _params(holds: list[str]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {CONNECTION: [], CAMPAIGN: []}
    for hold in holds:
        kind, _, row_id = hold.partition(":")
        if kind in ids and row_id.isdigit():
            ids[kind].append(int(row_id))
    return {"connections": ids[CONNECTION], "campaigns": ids[CAMPAIGN]}


async def release_ended_async(pool: AsyncConnectionPool, client: aioredis.Redis, holds: Holds) -> int:
    """Release the sends of every hold that ended, and of every parked send past its deadline; how many."""
    parked = await holds.holds_async(client)
    moved = 0
    if parked:
        async with pool.connection() as conn:
            cursor = await conn.execute(store.STILL_HELD, _params(parked), prepare=True)
            still = {row[0] for row in await cursor.fetchall()}
        moved += await holds.release_async(client, [hold for hold in parked if hold not in still])
        moved += await holds.release_expired_async(client)
    return moved


def release_ended(session: Session, client: redis.Redis, holds: Holds) -> int:
    """:func:`release_ended_async` from sync code (the scheduler's sweep), in ``session``'s transaction."""
    parked = holds.holds(client)
    moved = 0
    if parked:
        rows = session.connection().exec_driver_sql(store.STILL_HELD, _params(parked)).all()
        still = {row[0] for row in rows}
        moved += holds.release(client, [hold for hold in parked if hold not in still])
        moved += holds.release_expired(client)
    return moved


def send_job(message_id: int, priority: str) -> Message[Any]:
    """A fresh send job for a held message, on its tier's queue (no deferrals, no failures counted)."""
    return contracts.SEND_BY_TIER.get(priority, contracts.SEND_NORMAL).message(contracts.SendMessage(message_id))
