"""Worker module for the poison-guard test: zapq's broker plus an actor that SIGKILLs its own worker.

Run as ``python -m dramatiq tests.middleware.poison_app -p1 -t1 -Q test-poison`` with the test session's
environment. Actors report to Redis keys under ``<namespace>:test-poison:`` (the test runs in another process).
"""

from __future__ import annotations

import os
import signal
import time

import dramatiq

from services.scheduler import broker, settings

QUEUE = "test-poison"
KEYS = f"{settings.redis_namespace}:{QUEUE}"


@dramatiq.actor(actor_name="test_poison_kill", queue_name=QUEUE, broker=broker)
def poison() -> None:
    """Note the delivery and the time of death, then kill the worker process as a segfault would."""
    now = time.time()
    broker.client.rpush(f"{KEYS}:deliveries", now)
    broker.client.rpush(f"{KEYS}:kills", now)
    os.kill(os.getpid(), signal.SIGKILL)


@dramatiq.actor(actor_name="test_poison_normal", queue_name=QUEUE, broker=broker)
def normal(n: int) -> None:
    """A well-behaved job: note that it ran."""
    broker.client.sadd(f"{KEYS}:done", n)
