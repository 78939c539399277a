"""Enqueue Dramatiq messages straight into Redis, in bulk or from asyncio code.

Does what the Redis broker's ``enqueue`` Lua command does (``HSET <q>.msgs id payload`` + ``RPUSH <q> id``)
in one pipelined ``MULTI`` for many messages at once — the lever for bulk enqueues — and with
``redis.asyncio`` for ASGI handlers that must not block their event loop. Delayed messages still go
through ``broker.enqueue``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import uuid4

import redis
import redis.asyncio as aioredis
from dramatiq import Message


def _prepared(messages: Iterable[Message[Any]]) -> list[tuple[str, str, bytes]]:
    rows = []
    for message in messages:
        redis_id = str(uuid4())
        stamped = message.copy(options={"redis_message_id": redis_id})
        rows.append((stamped.queue_name, redis_id, stamped.encode()))
    return rows


def _queue_commands(pipe: Any, namespace: str, rows: list[tuple[str, str, bytes]]) -> None:
    by_queue: dict[str, list[tuple[str, bytes]]] = {}
    for queue, redis_id, data in rows:
        by_queue.setdefault(queue, []).append((redis_id, data))
    for queue, items in by_queue.items():
        key = f"{namespace}:{queue}"
        pipe.hset(f"{key}.msgs", mapping=dict(items))
        pipe.rpush(key, *(redis_id for redis_id, _ in items))


def enqueue_many(client: redis.Redis, namespace: str, messages: Iterable[Message[Any]]) -> int:
    """Enqueue ``messages`` atomically in one round trip; returns how many were enqueued."""
    rows = _prepared(messages)
    if rows:
        pipe = client.pipeline(transaction=True)
        _queue_commands(pipe, namespace, rows)
        pipe.execute()
    return len(rows)


async def enqueue_many_async(client: aioredis.Redis, namespace: str, messages: Iterable[Message[Any]]) -> int:
    """The asyncio twin of :func:`enqueue_many`."""
    rows = _prepared(messages)
    if rows:
        pipe = client.pipeline(transaction=True)
        _queue_commands(pipe, namespace, rows)
        await pipe.execute()
    return len(rows)
