"""Prompt crash recovery: requeue a dead worker's unacked messages within seconds, not by chance.

Dramatiq's Redis broker requeues the acks of workers silent for ``heartbeat_timeout`` only during
"maintenance", which runs on roughly one command in a thousand (upstream #527), and a busy worker whose
prefetch is full sends no heartbeat at all. This middleware runs a thread in every worker process that,
every ``interval`` seconds, refreshes the process's heartbeat and runs maintenance on every declared
queue — so a SIGKILLed worker's messages are back within ``heartbeat_timeout`` + ``interval``.
The interval is shortened to a third of the heartbeat timeout when that is shorter: a heartbeat sent less
often than the timeout would let live workers be taken for dead and their running jobs delivered twice.

A live worker can strand messages too: a fetch that Redis executed but whose reply was lost (Redis restarted
mid-call) leaves ids in the worker's own ack sets that no thread of it holds, and Dramatiq would requeue them
only once the worker dies. Each tick also requeues such orphans, once they have stayed orphaned for
``orphan_age`` seconds (a job between two hands, or acked but not yet written, is orphaned for milliseconds).
A stopping consumer's prefetch buffer, which Dramatiq leaves in the ack set, is requeued at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from dramatiq import Broker, Middleware, Worker
from dramatiq.broker import MessageProxy

from libs import dramatiq_ext
from libs.keys import BrokerKeys

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0
#: An id of the worker's own ack sets that none of its threads has held for this long is requeued.
DEFAULT_ORPHAN_AGE_SECONDS = 10.0


def run_maintenance(broker: Any, queues: Iterable[str] | None = None) -> None:
    """Heartbeat ``broker`` and requeue the unacked messages of dead workers on ``queues`` (default: all its
    declared queues)."""
    dramatiq_ext.maintain(broker, broker.get_declared_queues() if queues is None else queues)


class DeadWorkerRecovery(Middleware):
    """Run :func:`run_maintenance` (and requeue this process's orphans) every ``interval`` seconds."""

    def __init__(
        self, *, interval: float = DEFAULT_INTERVAL_SECONDS, orphan_age: float = DEFAULT_ORPHAN_AGE_SECONDS
    ) -> None:
        self.interval = interval
        self.orphan_age = orphan_age
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[Worker] = []
        self._running: set[str] = set()
        self._suspects: dict[str, float] = {}

    def tick_seconds(self, broker: Broker) -> float:
        """Seconds between runs: ``interval``, at most a third of the broker's heartbeat timeout."""
        timeout_ms = getattr(broker, "heartbeat_timeout", None)
        return self.interval if timeout_ms is None else min(self.interval, timeout_ms / 3000)

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start the maintenance thread."""
        self._workers.append(worker)
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
        if worker in self._workers:
            self._workers.remove(worker)

    def before_consumer_thread_shutdown(self, broker: Broker, thread: Any) -> None:
        """Requeue what the stopping consumer fetched but never handed out.

        Dramatiq leaves a consumer's prefetch buffer in the ack set when it stops (graceful shutdown included),
        so those jobs would wait for the heartbeat timeout and another worker's maintenance.
        """
        prefetched = dramatiq_ext.take_prefetched(thread)
        if prefetched is None:
            return
        consumer, messages = prefetched
        try:
            consumer.requeue(messages)
        except Exception:  # Redis down: maintenance requeues them once this worker's heartbeat stops
            logger.warning("could not requeue %d prefetched message(s) at shutdown", len(messages), exc_info=True)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """A worker thread holds this message until it is acked or nacked."""
        self._running.add(message.options.get("redis_message_id", ""))

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        """Released."""
        self._running.discard(message.options.get("redis_message_id", ""))

    after_nack = after_ack

    def _loop(self, broker: Broker, tick: float) -> None:
        while not self._stop.wait(tick):
            try:
                run_maintenance(broker)
                self.requeue_orphans(broker)
            except Exception:  # a Redis outage must not kill the thread; the next tick tries again
                logger.warning("broker maintenance failed", exc_info=True)

    def held(self, broker: Any = None) -> set[str]:
        """Redis ids of every message this process holds: prefetched, delayed, queued in memory, taken by a
        worker thread (waiting its turn in a batch, being marked, running), or acked but not yet written.

        Read in the order a message moves through them (fetched → work queue → a thread → the group commit),
        so one moving meanwhile is seen in at least one place.
        """
        held: set[str] = set()
        for worker in list(self._workers):
            held |= dramatiq_ext.fetched_ids(worker)
            local = getattr(worker, "zq_local", None)  # libs.middleware.concurrency.LocalJobs
            if local is not None:
                held |= local.ids()
        held |= self._running.copy()
        group_commit = getattr(broker, "group_commit", None)  # libs.redis_broker.GroupCommit
        if group_commit is not None:
            held |= group_commit.pending_ids()
        return held

    def requeue_orphans(self, broker: Any, now: float | None = None) -> int:
        """Requeue ids of this process's ack sets held by none of its workers for ``orphan_age`` seconds."""
        if not self._workers:
            return 0
        now = time.monotonic() if now is None else now
        held = self.held(broker)
        suspects: dict[str, float] = {}
        requeued = 0
        acks = BrokerKeys(broker.namespace)
        wid = dramatiq_ext.worker_id(broker)
        for queue_name in sorted(broker.get_declared_queues()):
            for name in (queue_name, dramatiq_ext.dq_name(queue_name)):
                key = acks.acks(wid, name)
                orphans = {m.decode() for m in broker.client.smembers(key)} - held
                due = [rid for rid in orphans if now - self._suspects.get(rid, now) >= self.orphan_age]
                suspects.update({rid: self._suspects.get(rid, now) for rid in orphans if rid not in due})
                if due:
                    dramatiq_ext.requeue(broker, name, due)
                    requeued += len(due)
                    logger.warning("requeued %d message(s) of %s fetched by this worker but never run", len(due), name)
        self._suspects = suspects
        return requeued
