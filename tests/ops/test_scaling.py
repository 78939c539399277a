"""Workers added or removed at will: a second process raises throughput; SIGTERM loses nothing."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from dramatiq import Message

from libs.enqueue import enqueue_many
from libs.ops.processes import ProcessGroup
from libs.settings import Settings

JOBS = 600
ARGS = ["-m", "dramatiq", "tests.ops.scaling_app", "-p", "1", "-t", "4", "--worker-fork-timeout", "5000"]


def rate(client: Any, key: str, seconds: float) -> float:
    """Completed runs per second over ``seconds`` (sampling an external process's progress)."""
    start, began = client.hlen(key), time.monotonic()
    time.sleep(seconds)
    return (client.hlen(key) - start) / (time.monotonic() - began)


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(150)
def test_second_worker_raises_throughput_and_sigterm_loses_nothing(broker: Any, settings: Settings) -> None:
    runs = f"{settings.redis_namespace}:scaling:runs"
    enqueue_many(
        broker.client,
        settings.redis_namespace,
        [
            Message(queue_name="scaling", actor_name="scaling_job", args=(n,), kwargs={}, options={})
            for n in range(JOBS)
        ],
    )
    group = ProcessGroup()
    with group.running():
        # Given one worker process (4 threads × 100 ms jobs ≈ 40 jobs/s)
        first = group.start("first", ARGS)
        wait_until(lambda: broker.client.hlen(runs) > 10, 60, "the first worker to start")
        alone = rate(broker.client, runs, 3.0)
        # When a second process joins the same queue
        group.start("second", ARGS)
        wait_until(lambda: broker.client.hlen(runs) > 10 + alone * 6, 60, "the second worker to start")
        together = rate(broker.client, runs, 3.0)
        # Then throughput rises
        assert together > alone * 1.5, f"alone {alone:.0f}/s, together {together:.0f}/s"
        # When the first gets SIGTERM mid-run, it finishes its in-flight jobs and exits cleanly
        os.kill(first.pid, signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        # Then the second finishes everything: each job ran, none twice (prefetched ones were returned)
        wait_until(
            lambda: broker.client.hlen(runs) >= JOBS
            and broker.client.hlen(f"{settings.redis_namespace}:scaling.msgs") == 0,
            90,
            "all jobs to complete",
        )
    counts = {int(k): int(v) for k, v in broker.client.hgetall(runs).items()}
    assert sorted(counts) == list(range(JOBS))
    assert max(counts.values()) == 1, f"{sum(v > 1 for v in counts.values())} job(s) ran twice"
    print(f"\nthroughput: one worker {alone:.1f} jobs/s, two workers {together:.1f} jobs/s")
