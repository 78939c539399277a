"""Heartbeats on Redis's clock: a worker whose host clock is a minute off is neither taken for dead nor takes
live workers for dead.

A real ``dramatiq tests.middleware.skew_app`` worker runs with ``time.time`` shifted by ``SKEW_SECONDS`` and a
2 s heartbeat timeout (its recovery thread ticks every 2/3 s). Meanwhile this process, on the true clock, holds
a message of its own in its ack set and runs Dramatiq's maintenance over the same queue every 0.3 s, as any
other worker would.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from dramatiq import Message

from libs.middleware.recovery import run_maintenance
from tests.middleware.skew_app import QUEUE
from tests.middleware.support import Processes, dramatiq_argv, subprocess_env, wait_until

SKEWED_HEARTBEAT_TIMEOUT_MS = 2_000
#: The skewed worker's job outlasts three of its heartbeat timeouts (and ten maintenance rounds here).
JOB_SECONDS = 6.0


def hold_in_own_ack_set(broker: Any) -> str:
    """Store a ``test-skew`` message as fetched but unacked by this process's broker; its Redis id."""
    ns, client = broker.namespace, broker.client
    message: Message[Any] = Message(queue_name=QUEUE, actor_name="test_skew_slow", args=(0.0,), kwargs={}, options={})
    redis_id = f"held-{message.message_id}"
    client.hset(f"{ns}:{QUEUE}.msgs", redis_id, message.encode())
    client.sadd(f"{ns}:__acks__.{broker.broker_id}.{QUEUE}", redis_id)
    return redis_id


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("skew_s", [-60, 60], ids=["clock-behind", "clock-ahead"])
def test_a_skewed_worker_is_not_taken_for_dead_and_takes_no_live_worker_for_dead(
    skew_s: int, broker: Any, processes: Processes
) -> None:
    ns, client = broker.namespace, broker.client
    keys = f"{ns}:{QUEUE}"
    # Given this process holding a message of its own, heartbeating on the true clock
    held = hold_in_own_ack_set(broker)
    run_maintenance(broker, queues=[QUEUE])
    # And a slow job for a worker whose clock is off by a minute
    job = broker.enqueue(
        Message(queue_name=QUEUE, actor_name="test_skew_slow", args=(JOB_SECONDS,), kwargs={}, options={})
    )
    env = subprocess_env(SKEW_SECONDS=str(skew_s), ZAPQ_HEARTBEAT_TIMEOUT_MS=str(SKEWED_HEARTBEAT_TIMEOUT_MS))
    worker = processes.start("skewed", dramatiq_argv("tests.middleware.skew_app", "-p1", "-t1", "-Q", QUEUE), env)
    wait_until(
        lambda: worker.poll() is not None or client.llen(f"{keys}:runs") > 0,
        timeout=45,
        what="the skewed worker to start the job",
    )
    assert worker.poll() is None, processes.logs()
    [skewed_id] = [value.decode() for value in client.lrange(f"{keys}:broker-ids", 0, -1)]

    # When both run maintenance over the queue while the job runs (here every 0.3 s, there every 2/3 s)
    own_acks = f"{ns}:__acks__.{broker.broker_id}.{QUEUE}"
    skewed_acks = f"{ns}:__acks__.{skewed_id}.{QUEUE}"
    offsets: list[float] = []  # skewed worker's last heartbeat - Redis's clock, at each round
    while client.llen(f"{keys}:done") == 0:
        assert worker.poll() is None, processes.logs()
        run_maintenance(broker, queues=[QUEUE])
        seconds, micros = client.time()
        score = client.zscore(f"{ns}:__heartbeats__", skewed_id)
        if score is not None:
            offsets.append(score / 1000 - (seconds + micros / 1e6))
        time.sleep(0.3)  # the maintenance cadence of a live worker, not a wait for a result

    # Then once the worker is idle again, its job ran exactly once (it was never requeued under it)
    wait_until(
        lambda: client.llen(keys) == 0 and client.scard(skewed_acks) == 0,
        timeout=15,
        what="the skewed worker to ack its job",
    )
    assert client.llen(f"{keys}:runs") == 1, processes.logs()
    assert not client.hexists(f"{ns}:{QUEUE}.msgs", job.options["redis_message_id"])
    # And the message this process holds was never taken from it
    assert client.smembers(own_acks) == {held.encode()}
    assert client.lrange(keys, 0, -1) == []
    # And the skewed worker's heartbeats were on Redis's clock: recent, not a minute off
    assert offsets, "the skewed worker never heartbeated"
    assert max(abs(offset) for offset in offsets) < SKEWED_HEARTBEAT_TIMEOUT_MS / 1000, offsets
