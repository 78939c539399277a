"""The ``core`` baseline: bare Dramatiq (plain ``RedisBroker``, default middleware) with the same no-op actor.

Run with ``dramatiq bench.bare_actors -p 2 -t 8``. Reads the namespace from ``ZAPQ_REDIS_NAMESPACE`` and the
Redis URL from ``ZAPQ_REDIS_URL`` so the bench points it at its own keys, like the zapq worker.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.jobs import NOOP

broker = RedisBroker(
    url=os.environ.get("ZAPQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ["ZAPQ_REDIS_NAMESPACE"],
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=NOOP.actor_name, queue_name=NOOP.queue_name)
def noop(n: int) -> None:
    """Do nothing."""
