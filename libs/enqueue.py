"""Enqueue Dramatiq messages straight into Redis, in bulk or from asyncio code.

Does what the Redis broker's ``enqueue`` Lua command does (``HSET <q>.msgs id payload`` + ``RPUSH <q> id``)
in one pipelined ``MULTI`` for many messages at once — the lever for bulk enqueues — and with
``redis.asyncio`` for ASGI handlers that must not block their event loop. Delayed messages still go
through ``broker.enqueue``.

Broker hooks do not run here, so the :mod:`~libs.middleware.lifecycle` bookkeeping is done inline: every
call advances each queue's ``seq`` counter (so positions of other jobs stay right), and with
``lifecycle=True`` each job also gets its ``waiting`` hash (one more round trip first, to reserve its
sequence numbers, plus an ``HSET`` + ``EXPIRE`` per job).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple
from uuid import uuid4

import redis
import redis.asyncio as aioredis
from dramatiq import Message

from libs.middleware.lifecycle import DEFAULT_JOB_TTL_SECONDS, LifecycleKeys, waiting_fields


class _Row(NamedTuple):
    queue: str
    redis_id: str
    data: bytes
    message: Message[Any]


def _prepared(messages: Iterable[Message[Any]]) -> list[_Row]:
    rows = []
    for message in messages:
        redis_id = str(uuid4())
        stamped = message.copy(options={"redis_message_id": redis_id})
        rows.append(_Row(stamped.queue_name, redis_id, stamped.encode(), message))
    return rows


def _reserve_commands(pipe: Any, keys: LifecycleKeys, counts: Counter[str]) -> None:
    for queue, count in counts.items():
        pipe.incrby(keys.seq(queue), count)


def _first_seqs(counts: Counter[str], results: list[Any]) -> dict[str, int]:
    return {queue: int(last) - count + 1 for (queue, count), last in zip(counts.items(), results, strict=True)}


def _queue_commands(pipe: Any, namespace: str, rows: list[_Row], first_seq: dict[str, int] | None) -> None:
    keys = LifecycleKeys(namespace)
    by_queue: dict[str, list[_Row]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    for queue, items in by_queue.items():
        key = f"{namespace}:{queue}"
        pipe.hset(f"{key}.msgs", mapping={row.redis_id: row.data for row in items})
        pipe.rpush(key, *(row.redis_id for row in items))
        if first_seq is None:
            pipe.incrby(keys.seq(queue), len(items))
    if first_seq is not None:
        now = time.time()
        for row in rows:
            seq = first_seq[row.queue]
            first_seq[row.queue] = seq + 1
            fields = {k: v for k, v in waiting_fields(row.message, now, seq).items() if v is not None}
            pipe.hset(keys.job(row.message.message_id), mapping=fields)
            pipe.expire(keys.job(row.message.message_id), DEFAULT_JOB_TTL_SECONDS)


def enqueue_many(
    client: redis.Redis, namespace: str, messages: Iterable[Message[Any]], *, lifecycle: bool = False
) -> int:
    """Enqueue ``messages`` atomically in one round trip (two with ``lifecycle``); returns how many."""
    rows = _prepared(messages)
    if not rows:
        return 0
    first_seq = None
    if lifecycle:
        counts = Counter(row.queue for row in rows)
        reserve = client.pipeline(transaction=False)
        _reserve_commands(reserve, LifecycleKeys(namespace), counts)
        first_seq = _first_seqs(counts, reserve.execute())
    pipe = client.pipeline(transaction=True)
    _queue_commands(pipe, namespace, rows, first_seq)
    pipe.execute()
    return len(rows)


async def enqueue_many_async(
    client: aioredis.Redis, namespace: str, messages: Iterable[Message[Any]], *, lifecycle: bool = False
) -> int:
    """The asyncio twin of :func:`enqueue_many`."""
    rows = _prepared(messages)
    if not rows:
        return 0
    first_seq = None
    if lifecycle:
        counts = Counter(row.queue for row in rows)
        reserve = client.pipeline(transaction=False)
        _reserve_commands(reserve, LifecycleKeys(namespace), counts)
        first_seq = _first_seqs(counts, await reserve.execute())
    pipe = client.pipeline(transaction=True)
    _queue_commands(pipe, namespace, rows, first_seq)
    await pipe.execute()
    return len(rows)
