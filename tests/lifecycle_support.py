"""Install zapq's :class:`Lifecycle` middleware on the shared test broker for one test (shared by several dirs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from libs.middleware.lifecycle import Lifecycle, LifecycleKeys
from libs.middleware.poison import PoisonGuard


@contextlib.contextmanager
def installed_lifecycle(broker: Any, *, flush_interval: float = 0.05) -> Iterator[Lifecycle]:
    """The broker's Lifecycle (added before ``PoisonGuard`` — hence before ``RetryMiddleware`` — if missing).

    That is the position production needs: Dramatiq runs ``after_*`` hooks in reverse order, so the retry
    middleware marks the outcome of a failed attempt before the lifecycle records it.
    """
    existing = next((m for m in broker.middleware if isinstance(m, Lifecycle)), None)
    if existing is not None:
        yield existing
        existing.flush()
        return
    lifecycle = Lifecycle(flush_interval=flush_interval)
    broker.add_middleware(lifecycle, before=PoisonGuard)
    try:
        yield lifecycle
    finally:
        broker.middleware.remove(lifecycle)
        lifecycle.close()


def job_hash(broker: Any, message_id: str) -> dict[str, str]:
    """The lifecycle hash of a job, decoded."""
    raw = broker.client.hgetall(LifecycleKeys(broker.namespace).job(message_id))
    return {k.decode(): v.decode() for k, v in raw.items()}
