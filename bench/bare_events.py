"""The ``events`` baseline: one Dramatiq job per webhook delivery, as a plain async actor would do it.

A plain ``RedisBroker`` with its default middleware plus ``AsyncIO``, and one ``async def`` actor doing one
signed ``httpx`` POST per job — at most one delivery in flight per worker thread. Run with
``dramatiq bench.bare_events -p 1 -t 8``; the bench sets ``ZAPQ_REDIS_NAMESPACE``.
"""

from __future__ import annotations

import os

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from bench.jobs import EVENT_ACTOR, EVENT_QUEUE

broker = RedisBroker(
    url=os.environ.get("ZAPQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ["ZAPQ_REDIS_NAMESPACE"],
)
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)

_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    """The process's client, created on the event loop thread at the first job."""
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    return _client


@dramatiq.actor(actor_name=EVENT_ACTOR, queue_name=EVENT_QUEUE)
async def bare_deliver(url: str, headers: dict[str, str], body: str) -> None:
    """POST one (already signed) delivery; a non-2xx answer fails the job."""
    response = await _http().post(url, content=body.encode(), headers=headers)
    response.raise_for_status()
