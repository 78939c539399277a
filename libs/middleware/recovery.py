"""Prompt crash recovery: requeue a dead worker's unacked messages within seconds, not by chance.

Dramatiq's Redis broker requeues the acks of workers silent for ``heartbeat_timeout`` only during
"maintenance", which runs on roughly one command in a thousand (upstream #527), and a busy worker whose
prefetch is full sends no heartbeat at all. This middleware runs a thread in every worker process that,
every ``interval`` seconds, refreshes the process's heartbeat and runs maintenance on every declared
queue — so a SIGKILLed worker's messages are back within ``heartbeat_timeout`` + ``interval``.
The interval is shortened to a third of the heartbeat timeout when that is shorter: a heartbeat sent less
often than the timeout would let live workers be taken for dead and their running jobs delivered twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.common import dq_name

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0


def run_maintenance(broker: Any) -> None:
    """Heartbeat ``broker`` and requeue the unacked messages of dead workers on all its queues."""
    dispatch = broker.scripts["dispatch"]
    now = int(time.time() * 1000)
    for queue in sorted(broker.get_declared_queues()):
        for name in (queue, dq_name(queue)):
            dispatch(
                keys=[broker.namespace],
                args=[
                    "qsize",  # a read-only command: the call exists for its maintenance step
                    now,
                    name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    1,
                    broker._max_unpack_size(),
                ],
            )


class DeadWorkerRecovery(Middleware):
    """Run :func:`run_maintenance` every ``interval`` seconds while the worker runs."""

    def __init__(self, *, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick_seconds(self, broker: Broker) -> float:
        """Seconds between runs: ``interval``, at most a third of the broker's heartbeat timeout."""
        timeout_ms = getattr(broker, "heartbeat_timeout", None)
        return self.interval if timeout_ms is None else min(self.interval, timeout_ms / 3000)

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start the maintenance thread."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(broker, self.tick_seconds(broker)), name="zapq-recovery", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Stop the maintenance thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)

    def _loop(self, broker: Broker, tick: float) -> None:
        while not self._stop.wait(tick):
            try:
                run_maintenance(broker)
            except Exception:  # a Redis outage must not kill the thread; the next tick tries again
                logger.warning("broker maintenance failed", exc_info=True)
