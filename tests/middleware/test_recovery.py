"""Dead-worker recovery: a dead worker's unacked messages are requeued by maintenance, a live one's are not."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from dramatiq import Message

from libs import contracts
from libs.middleware.recovery import DeadWorkerRecovery, run_maintenance


def park_unacked(broker: Any, worker_id: str, heartbeat_ms: int) -> str:
    """Store a ``webhooks`` message as fetched but unacked by ``worker_id``, last heard of at ``heartbeat_ms``."""
    ns, client = broker.namespace, broker.client
    message: Message[Any] = Message(
        queue_name=contracts.WEBHOOKS, actor_name="test_permanent", args=(), kwargs={}, options={}
    )
    redis_id = f"redis-{message.message_id}"
    client.hset(f"{ns}:{contracts.WEBHOOKS}.msgs", redis_id, message.encode())
    client.sadd(f"{ns}:__acks__.{worker_id}.{contracts.WEBHOOKS}", redis_id)
    client.zadd(f"{ns}:__heartbeats__", {worker_id: heartbeat_ms})
    return redis_id


def test_maintenance_requeues_only_dead_workers_messages(broker: Any) -> None:
    # Given one message held by a worker silent for longer than the heartbeat timeout, one by a live worker
    ns, client = broker.namespace, broker.client
    now_ms = int(time.time() * 1000)
    dead = park_unacked(broker, "dead-worker", now_ms - broker.heartbeat_timeout - 1_000)
    alive = park_unacked(broker, "live-worker", now_ms)
    # When maintenance runs
    run_maintenance(broker)
    # Then the dead worker's message is back on its queue and its ack set and heartbeat are gone
    waiting = [m.decode() for m in client.lrange(f"{ns}:{contracts.WEBHOOKS}", 0, -1)]
    assert waiting == [dead]
    assert not client.exists(f"{ns}:__acks__.dead-worker.{contracts.WEBHOOKS}")
    assert client.zscore(f"{ns}:__heartbeats__", "dead-worker") is None
    # And the live worker keeps its message
    assert client.smembers(f"{ns}:__acks__.live-worker.{contracts.WEBHOOKS}") == {alive.encode()}
    # And the process running maintenance heartbeats as well
    assert client.zscore(f"{ns}:__heartbeats__", broker.broker_id) is not None


def test_tick_stays_within_a_third_of_the_heartbeat_timeout() -> None:
    # Given the default 5 s interval
    recovery = DeadWorkerRecovery()
    # Then it ticks every 5 s under the default 15 s timeout, but every 2/3 s under a 2 s timeout
    assert recovery.tick_seconds(SimpleNamespace(heartbeat_timeout=15_000)) == 5.0  # type: ignore[arg-type]
    assert recovery.tick_seconds(SimpleNamespace(heartbeat_timeout=60_000)) == 5.0  # type: ignore[arg-type]
    assert abs(recovery.tick_seconds(SimpleNamespace(heartbeat_timeout=2_000)) - 2 / 3) < 1e-9  # type: ignore[arg-type]
