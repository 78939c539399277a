"""The ``send`` baseline: what Dramatiq gives out of the box for provider calls.

A plain ``RedisBroker`` with its default middleware plus ``AsyncIO``, and one ``async def`` actor doing one
``httpx`` POST per job — so a worker has at most one send in flight per thread. Run with
``dramatiq bench.bare_send -p 1 -t 8``; the bench sets ``ZAPQ_REDIS_NAMESPACE`` and ``ZAPQ_META_GRAPH_URL``.
"""

from __future__ import annotations

import os

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from bench.jobs import SEND_ACTOR, SEND_QUEUE

#: The fake Graph API's token (``tests.fakes.meta.DEFAULT_TOKEN``; not imported, to keep this worker bare).
TOKEN = "fake-meta-token"
GRAPH_URL = os.environ.get("ZAPQ_META_GRAPH_URL", "http://127.0.0.1:18080")

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
        _client = httpx.AsyncClient(timeout=httpx.Timeout(20.0, connect=5.0))
    return _client


@dramatiq.actor(actor_name=SEND_ACTOR, queue_name=SEND_QUEUE)
async def bare_send(phone_number_id: str, to: str, body: str, client_ref: str) -> None:
    """POST one text message to the Graph API; any non-2xx answer fails the job."""
    response = await _http().post(
        f"{GRAPH_URL}/v21.0/{phone_number_id}/messages",
        json={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": body},
            "biz_opaque_callback_data": client_ref,
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    response.raise_for_status()
