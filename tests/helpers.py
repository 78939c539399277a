"""Small helpers shared by tests."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis


def queue_length(client: redis.Redis, namespace: str, queue: str) -> int:
    """Messages waiting in ``queue`` (list length) in ``namespace``."""
    return int(client.llen(f"{namespace}:{queue}"))


def low_tier_waiting(client: redis.Redis, namespace: str) -> int:
    """Campaign sends waiting: in ``messages.low`` itself and in the per-company fair lanes."""
    from libs import contracts
    from libs.campaigns.lanes import Lanes

    return queue_length(client, namespace, contracts.MESSAGES_LOW) + Lanes(namespace).backlog(client)


def stored_messages(client: redis.Redis, namespace: str, queue: str) -> int:
    """Messages of ``queue`` not yet acked (waiting + in flight)."""
    return int(client.hlen(f"{namespace}:{queue}.msgs"))


def all_keys(client: redis.Redis, namespace: str) -> list[Any]:
    """Every key in ``namespace``."""
    return list(client.scan_iter(match=f"{namespace}:*"))


def drain(broker: Any, worker: dramatiq.Worker, queues: list[str] | None = None, timeout_ms: int = 30_000) -> None:
    """Wait until every queue (and its delay queue) is empty and the worker idle, twice in a row."""
    names = queues or sorted(broker.get_declared_queues())
    for _ in range(50):
        for name in names:
            broker.join(name, timeout=timeout_ms)
        worker.join()
        if all(broker.do_qsize(name) == 0 for name in names):
            return
    raise AssertionError("queues did not drain")
