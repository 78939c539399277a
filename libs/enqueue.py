"""Enqueue Dramatiq messages straight into Redis, in bulk or from asyncio code.

Does what the Redis broker's ``enqueue`` Lua command does (``HSET <q>.msgs id payload`` + ``RPUSH <q> id``)
in one pipelined ``MULTI`` for many messages at once — the lever for bulk enqueues — and with
``redis.asyncio`` for ASGI handlers that must not block their event loop. Delayed messages still go
through ``broker.enqueue``.

Broker hooks do not run here, so the :mod:`~libs.middleware.lifecycle` bookkeeping is done inline, in
the same ``MULTI``: every call advances each queue's ``seq`` counter (so positions of other jobs stay
right), and with ``lifecycle=True`` each job also gets its ``waiting`` hash (the lifecycle's Lua script,
run inside the transaction).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple
from uuid import uuid4

import redis
import redis.asyncio as aioredis
from dramatiq import Message

from libs.keys import BrokerKeys, LifecycleKeys
from libs.middleware.lifecycle import APPLY_LUA, CHUNK, WIDTH, apply_args, waiting_records
from libs.middleware.tracing import TraceContext


class _Row(NamedTuple):
    queue: str
    redis_id: str
    data: bytes
    message: Message[Any]


def prepared(messages: Iterable[Message[Any]]) -> list[_Row]:
    rows = []
    for message in messages:
        redis_id = str(uuid4())
        stamped = message.copy(options={"redis_message_id": redis_id, **TraceContext.options_for(message)})
        rows.append(_Row(stamped.queue_name, redis_id, stamped.encode(), message))
    return rows


def _queue_commands(pipe: Any, namespace: str, rows: list[_Row], *, lifecycle: bool) -> None:
    keys = LifecycleKeys(namespace)
    broker_keys = BrokerKeys(namespace)
    by_queue: dict[str, list[_Row]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    for queue, items in by_queue.items():
        pipe.hset(broker_keys.messages(queue), mapping={row.redis_id: row.data for row in items})
        pipe.rpush(broker_keys.queue(queue), *(row.redis_id for row in items))
        if not lifecycle:
            pipe.incrby(keys.seq(queue), len(items))
    if lifecycle:  # the script advances seq itself, one job at a time
        records = waiting_records((row.message for row in rows), time.time())
        step = CHUNK * WIDTH
        for start in range(0, len(records), step):
            pipe.eval(APPLY_LUA, 0, *apply_args(keys, records[start : start + step]))


def enqueue_many(
    client: redis.Redis, namespace: str, messages: Iterable[Message[Any]], *, lifecycle: bool = False
) -> int:
    """Enqueue ``messages`` atomically in one round trip; returns how many were enqueued."""
    rows = prepared(messages)
    if rows:
        pipe = client.pipeline(transaction=True)
        _queue_commands(pipe, namespace, rows, lifecycle=lifecycle)
        pipe.execute()
    return len(rows)


async def enqueue_many_async(
    client: aioredis.Redis, namespace: str, messages: Iterable[Message[Any]], *, lifecycle: bool = False
) -> int:
    """The asyncio twin of :func:`enqueue_many`."""
    rows = prepared(messages)
    if rows:
        pipe = client.pipeline(transaction=True)
        _queue_commands(pipe, namespace, rows, lifecycle=lifecycle)
        await pipe.execute()
    return len(rows)
