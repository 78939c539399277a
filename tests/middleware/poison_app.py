"""Worker module for the poison-guard tests: zapq's broker plus actors that SIGKILL their own worker.

Run as ``python -m dramatiq tests.middleware.poison_app -p1 -t1 -Q test-poison`` with the test session's
environment. Actors report to Redis keys under ``<namespace>:test-poison:`` (the test runs in another process).
The ``concurrent`` pair runs many jobs in flight on one worker thread: the poison one kills the process while
the others of its batch are still running.
"""

from __future__ import annotations

import asyncio
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


#: The concurrent poison kills its process this long after it starts; innocent jobs run longer than that.
POISON_AFTER_S = 0.2
INNOCENT_S = 0.4


@dramatiq.actor(actor_name="test_poison_concurrent_kill", queue_name=QUEUE, broker=broker, concurrent=True)
async def concurrent_poison() -> None:
    """Kill the worker process shortly after starting, while the rest of its batch is in flight."""
    await asyncio.sleep(POISON_AFTER_S)
    now = time.time()
    broker.client.rpush(f"{KEYS}:deliveries", now)
    broker.client.rpush(f"{KEYS}:kills", now)
    os.kill(os.getpid(), signal.SIGKILL)


@dramatiq.actor(actor_name="test_poison_concurrent_normal", queue_name=QUEUE, broker=broker, concurrent=True)
async def concurrent_normal(n: int) -> None:
    """An innocent send-like job: in flight for a while, then note that it completed."""
    await asyncio.sleep(INNOCENT_S)
    broker.client.sadd(f"{KEYS}:done", n)
