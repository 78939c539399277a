"""Waking an endpoint's pump: Redis flags that make "new work for endpoint N" reach exactly one running pump.

Per endpoint, in the broker's namespace (:class:`libs.keys.EndpointKeys`):

* ``…:dirty`` — set by every kick: "there may be new due deliveries". A running pump takes (GETDEL) it
  while it works and once more *after* releasing its lock, so work kicked at any moment is seen either by
  the running pump or by the next one;
* ``…:queued`` — a pump job is already waiting in the queue: kicks set ``dirty`` but enqueue nothing more;
* ``…:wake`` — the time of the delayed pump job scheduled for the next retry (so one is scheduled, not many).

Losing these (a Redis restart) loses no delivery: the deliveries are rows in Postgres, and the periodic sweep
kicks every endpoint with due ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from dramatiq import Message

from libs import contracts, lua
from libs.enqueue import enqueue_many, enqueue_many_async
from libs.keys import EndpointKeys

#: Marks endpoints dirty; which ones need a pump enqueued (``libs/lua/kicks_kick.lua``).
KICK_LUA = lua.source("kicks_kick")
#: Whether a delayed pump must be scheduled (``libs/lua/kicks_wake.lua``).
WAKE_LUA = lua.source("kicks_wake")

#: A queued pump job not picked up after this long is presumed lost: the next kick enqueues another.
QUEUED_TTL_S = 30


class Kicks:
    """The flags of every endpoint in one Redis namespace, and the pump jobs they enqueue."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.names = EndpointKeys(namespace)

    def key(self, endpoint_id: int, flag: str) -> str:
        """The Redis key of one flag of one endpoint."""
        return self.names.flag(endpoint_id, flag)

    def _keys(self, endpoint_ids: list[int]) -> list[str]:
        return [k for e in endpoint_ids for k in (self.key(e, "dirty"), self.key(e, "queued"))]

    @staticmethod
    def pump_job(endpoint_id: int) -> Message[Any]:
        """The job that runs one endpoint's pump."""
        return contracts.DELIVER_EVENTS.message(contracts.DeliverEvents(endpoint_id))

    def kick(self, client: redis.Redis, endpoint_ids: set[int] | list[int]) -> int:
        """Mark the endpoints dirty and enqueue a pump for each one without a queued pump; returns how many."""
        ids = sorted(endpoint_ids)
        if not ids:
            return 0
        chosen = client.eval(KICK_LUA, len(ids) * 2, *self._keys(ids), QUEUED_TTL_S)
        return enqueue_many(client, self.namespace, (self.pump_job(ids[int(i)]) for i in chosen))  # type: ignore[union-attr]

    async def kick_async(self, client: aioredis.Redis, endpoint_ids: set[int] | list[int]) -> int:
        """:meth:`kick` from asyncio code."""
        ids = sorted(endpoint_ids)
        if not ids:
            return 0
        chosen = await client.eval(KICK_LUA, len(ids) * 2, *self._keys(ids), QUEUED_TTL_S)  # type: ignore[misc]
        return await enqueue_many_async(client, self.namespace, (self.pump_job(ids[int(i)]) for i in chosen))

    async def started(self, client: aioredis.Redis, endpoint_id: int) -> None:
        """A pump job began: the next kick may enqueue another."""
        await client.delete(self.key(endpoint_id, "queued"))

    async def take_dirty(self, client: aioredis.Redis, endpoint_id: int) -> bool:
        """Whether the endpoint was kicked since the last call (and clear the mark)."""
        return await client.getdel(self.key(endpoint_id, "dirty")) is not None

    def wake(
        self, client: redis.Redis, enqueue: Callable[[Message[Any], int], Any], endpoint_id: int, wait_s: float
    ) -> bool:
        """Schedule a pump of the endpoint in ``wait_s`` seconds (``enqueue(message, delay_ms)``), unless one is
        scheduled at or before then; True when scheduled."""
        now_ms = int(time.time() * 1000)
        due_ms = now_ms + max(0, int(wait_s * 1000))
        if not client.eval(WAKE_LUA, 1, self.key(endpoint_id, "wake"), due_ms, now_ms):
            return False
        enqueue(self.pump_job(endpoint_id), due_ms - now_ms)
        return True

    async def need_wake(self, client: aioredis.Redis, endpoint_id: int, due_s: float) -> bool:
        """Whether a delayed pump must be scheduled for ``due_s`` (none is scheduled at or before it)."""
        now_ms = int(time.time() * 1000)
        due_ms = max(now_ms, int(due_s * 1000))
        result = await client.eval(WAKE_LUA, 1, self.key(endpoint_id, "wake"), due_ms, now_ms)  # type: ignore[misc]
        return bool(result)
