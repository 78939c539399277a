"""Liveness is progress: a worker holding jobs that finishes none for its stall limit reports a problem (its
probe fails), and is healthy again with the next finished job. A real worker; the clock is passed explicitly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.middleware.liveness import Liveness, longest_time_limit_s
from libs.ops import probe
from tests.middleware.support import wait_until

STALL_S = 5.0
BOUND_S = 30.0
RELEASE = threading.Event()
STARTED = threading.Event()


def stuck_job() -> None:
    """Hold the worker thread until the test releases it (as a job stuck on a dependency would)."""
    STARTED.set()
    assert RELEASE.wait(BOUND_S)


@pytest.fixture
def stuck(broker: Any) -> Iterator[Any]:
    if "test_liveness_stuck" not in broker.actors:
        dramatiq.actor(stuck_job, actor_name="test_liveness_stuck", queue_name=contracts.WEBHOOKS, broker=broker)
    RELEASE.clear()
    STARTED.clear()
    yield broker.actors["test_liveness_stuck"]
    RELEASE.set()


def test_a_worker_holding_jobs_without_finishing_any_is_unwell_until_it_progresses(
    broker: Any, worker: dramatiq.Worker, stuck: Any
) -> None:
    liveness = next(m for m in broker.middleware if isinstance(m, Liveness))
    # Given an idle worker: healthy
    assert liveness.problem(worker, STALL_S) is None
    # When it takes a job that does not finish
    stuck.send()
    assert STARTED.wait(BOUND_S)
    start = time.monotonic()
    # Then it is healthy within the stall limit, and unwell past it, saying what it holds
    assert liveness.problem(worker, STALL_S, now=start + STALL_S / 2) is None
    problem = liveness.problem(worker, STALL_S, now=start + STALL_S + 1)
    assert problem is not None and problem.startswith("holds 1 job(s) and finished none for"), problem
    # And once the job finishes, it is healthy again
    RELEASE.set()
    wait_until(
        lambda: liveness.problem(worker, STALL_S) is None and worker.work_queue.unfinished_tasks == 0,
        timeout=BOUND_S,
        what="the worker to finish the job",
    )


def test_the_default_stall_limit_outlasts_the_longest_time_limit_of_the_workers_actors(broker: Any) -> None:
    # Given a worker consuming the campaign queue (its actor may run 5 minutes) and one consuming only webhooks
    campaigns = dramatiq.Worker(broker, queues={contracts.CAMPAIGNS})
    webhooks = dramatiq.Worker(broker, queues={contracts.WEBHOOKS})
    # Then each one's stall limit covers its own longest job (webhook groups: 2 minutes)
    assert longest_time_limit_s(broker, campaigns) == 300
    assert longest_time_limit_s(broker, webhooks) == 120


def test_the_probe_fails_on_a_reported_problem(tmp_path: Any) -> None:
    # Given a fresh heartbeat that reports a stall
    probe.touch(str(tmp_path), "worker", "holds 3 job(s) and finished none for 95 s (limit 90 s)")
    # Then the probe fails and says why; once the process reports health again it passes
    healthy, reason = probe.check(str(tmp_path), "worker", 30)
    assert not healthy and "holds 3 job(s)" in reason
    probe.touch(str(tmp_path), "worker")
    assert probe.check(str(tmp_path), "worker", 30) == (True, "1 worker process(es) alive")
