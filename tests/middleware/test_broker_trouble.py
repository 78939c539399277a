"""Redis refusing writes never hangs or kills a worker's threads: a real worker on a Redis of the test's own.

Two ways a live Redis refuses writes while still answering reads: ``CONFIG SET maxmemory 1`` with
``noeviction`` (every write that needs memory fails with ``OOM``, as a Redis that filled up), and ``REPLICAOF``
an unreachable primary (every write fails with ``READONLY``, as the old primary after a failover). Dramatiq's
own paths only expect connection errors; here every thread of the worker (its worker threads, consumers and
the group commit writing acks and delivery marks) must come through such a spell, and every job must run
exactly once afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

from libs import contracts
from libs.broker import build_broker
from libs.settings import load_settings
from tests.faults.support import RedisInstance, own_redis, wait_until

PLAIN = 150
CONCURRENT = 150
REFUSING_S = 3.0


class Runs:
    """How often each test job ran (in this process: Redis may be refusing writes meanwhile)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


@pytest.fixture
def own() -> Iterator[RedisInstance]:
    with own_redis() as instance:
        yield instance


@pytest.fixture
def own_broker(own: RedisInstance, tmp_path: Path) -> Iterator[tuple[Any, Runs]]:
    """zapq's broker and middleware on the test's own Redis, with a plain and a concurrent test actor."""
    settings = load_settings(
        redis_url=own.url, redis_namespace=f"trouble-{uuid.uuid4().hex[:8]}", heartbeat_dir=str(tmp_path)
    )
    broker = build_broker(settings)
    runs = Runs()

    def plain(key: str) -> None:
        time.sleep(0.005)
        runs.add(key)

    async def concurrent(key: str) -> None:
        await asyncio.sleep(0.05)
        runs.add(key)

    dramatiq.actor(plain, actor_name="trouble_plain", queue_name=contracts.WEBHOOKS, broker=broker)
    dramatiq.actor(
        concurrent, actor_name="trouble_concurrent", queue_name=contracts.MESSAGES, broker=broker, concurrent=True
    )
    yield broker, runs
    broker.client.close()


def threads_alive(worker: dramatiq.Worker, broker: Any) -> dict[str, bool]:
    """Whether each of the worker's threads (and the group commit's) is alive."""
    alive = {f"worker-{n}": thread.is_alive() for n, thread in enumerate(worker.workers)}
    alive |= {f"consumer-{name}": thread.is_alive() for name, thread in worker.consumers.items()}
    commit = broker.group_commit._thread
    alive["group-commit"] = commit is not None and commit.is_alive()
    return alive


def send_batch(broker: Any, prefix: str) -> set[str]:
    """Enqueue ``PLAIN`` plain and ``CONCURRENT`` concurrent jobs; their keys."""
    keys = set()
    for n in range(PLAIN):
        keys.add(key := f"{prefix}-p{n}")
        broker.actors["trouble_plain"].send(key)
    for n in range(CONCURRENT):
        keys.add(key := f"{prefix}-c{n}")
        broker.actors["trouble_concurrent"].send(key)
    return keys


def refuse_writes(control: redis.Redis, fault: str) -> type[Exception]:
    """Make Redis refuse writes the way ``fault`` says; the error a write then gets."""
    if fault == "oom":
        control.config_set("maxmemory-policy", "noeviction")
        control.config_set("maxmemory", "1")
        return redis.exceptions.OutOfMemoryError
    control.execute_command("REPLICAOF", "127.0.0.1", "1")  # a primary that never answers: the data stays
    return redis.exceptions.ReadOnlyError


def take_writes(control: redis.Redis, fault: str) -> None:
    """Undo :func:`refuse_writes`."""
    if fault == "oom":
        control.config_set("maxmemory", "0")
    else:
        control.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["oom", "readonly"])
def test_a_spell_of_refused_writes_neither_hangs_nor_kills_a_worker_thread(
    fault: str, own: RedisInstance, own_broker: tuple[Any, Runs]
) -> None:
    broker, runs = own_broker
    control = redis.Redis.from_url(own.url)
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        # Given a worker running a stream of plain and concurrent jobs
        first = send_batch(broker, "before")
        wait_until(lambda: runs.total() >= 20, timeout=30, what="the worker to get going")

        # When Redis refuses every write for a few seconds
        refused = refuse_writes(control, fault)
        with pytest.raises(refused):
            control.set("probe", "x")
        time.sleep(REFUSING_S)  # the fault's duration, not a wait for a result
        take_writes(control, fault)
        cleared = time.monotonic()

        # Then every job runs once Redis takes writes again, and each ran exactly once
        wait_until(
            lambda: first <= set(runs.counts),
            timeout=45,
            what=lambda: f"every job to run ({len(first - set(runs.counts))} left; {threads_alive(worker, broker)})",
        )
        recovered = time.monotonic() - cleared
        assert [key for key, count in runs.counts.items() if count != 1] == []
        # And no thread of the worker died
        assert all(threads_alive(worker, broker).values()), threads_alive(worker, broker)
        # And new work is still processed
        second = send_batch(broker, "after")
        wait_until(lambda: second <= set(runs.counts), timeout=30, what="new jobs to run after the fault")
        assert [key for key, count in runs.counts.items() if count != 1] == []
        print(f"\n{fault} for {REFUSING_S:.0f} s: all {len(first)} jobs done {recovered:.1f} s after it, once each")
    finally:
        take_writes(control, fault)
        worker.stop(timeout=10_000)
        control.close()
