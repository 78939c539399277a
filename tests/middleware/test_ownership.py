"""A live worker's jobs are never requeued under it: every job the process holds counts as held.

A worker thread takes several ordinary jobs from the work queue at once (``PLAIN_BATCH``) and runs them one
after another; the ones waiting their turn are in none of Dramatiq's queues. Dead-worker recovery requeues the
ids of the process's own ack sets that nothing holds for ``orphan_age`` seconds, so it must see those too.
Recovery is driven here with an explicit clock (``requeue_orphans(now=…)``) instead of waiting it out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Middleware

from libs import contracts
from libs.middleware.recovery import DeadWorkerRecovery
from tests.helpers import drain
from tests.middleware.support import wait_until

JOBS = 6
BOUND_S = 30.0


class Slow:
    """What the slow test jobs did; they hold their thread until ``release`` is set."""

    def __init__(self) -> None:
        self.runs: list[int] = []
        self.started = threading.Condition()
        self.release = threading.Event()

    def run(self, n: int) -> None:
        with self.started:
            self.runs.append(n)
            self.started.notify_all()
        assert self.release.wait(BOUND_S), "the test never released the job"


SLOW = Slow()


def slow_job(n: int) -> None:
    """Record the run, then hold the worker thread until the test releases it."""
    SLOW.run(n)


class BootGate(Middleware):
    """Holds every worker thread at boot until ``open`` is set (so the first refill sees the whole queue)."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def after_worker_thread_boot(self, broker: Any, thread: Any) -> None:
        assert self.open.wait(BOUND_S)


@pytest.fixture
def slow(broker: Any) -> Iterator[Slow]:
    if "test_ownership_slow" not in broker.actors:
        dramatiq.actor(slow_job, actor_name="test_ownership_slow", queue_name=contracts.WEBHOOKS, broker=broker)
    SLOW.runs.clear()
    SLOW.release.clear()
    yield SLOW
    SLOW.release.set()


def test_jobs_waiting_in_a_threads_local_batch_are_not_requeued_as_orphans(broker: Any, slow: Slow) -> None:
    recovery = next(m for m in broker.middleware if isinstance(m, DeadWorkerRecovery))
    gate = BootGate()
    broker.add_middleware(gate)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    try:
        # Given six slow jobs fetched by a one-thread worker, all in its work queue before the thread takes any
        for n in range(JOBS):
            broker.actors["test_ownership_slow"].send(n)
        worker.start()
        wait_until(lambda: worker.work_queue.qsize() == JOBS, timeout=BOUND_S, what="the consumer to fetch the jobs")
        # When the thread takes them all: it runs the first and holds the other five in its local batch
        gate.open.set()
        with slow.started:
            assert slow.started.wait_for(lambda: slow.runs == [0], BOUND_S)
        assert worker.work_queue.qsize() == 0
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{contracts.WEBHOOKS}"
        assert broker.client.scard(acks) == JOBS

        # And recovery looks for orphans twice, longer than the orphan age apart
        now = time.monotonic()
        first = recovery.requeue_orphans(broker, now=now)
        second = recovery.requeue_orphans(broker, now=now + recovery.orphan_age + 1)

        # Then nothing the thread holds was requeued
        assert (first, second) == (0, 0)
        assert broker.client.llen(f"{broker.namespace}:{contracts.WEBHOOKS}") == 0
        # And once released, every job ran exactly once
        slow.release.set()
        drain(broker, worker, [contracts.WEBHOOKS])
        assert sorted(slow.runs) == list(range(JOBS))
    finally:
        slow.release.set()
        gate.open.set()
        worker.stop()
        broker.middleware[:] = [
            m for m in broker.middleware if m is not gate and getattr(m, "worker", None) is not worker
        ]
