"""Poison-message guard: a job whose worker dies while running it is dead-lettered after N deliveries.

Dramatiq redelivers a SIGKILLed job without counting a retry (upstream #213), so a job that kills its
worker would loop forever. Each delivery increments a counter in Redis before the actor runs; the counter
is dropped when the attempt ends in any way the process survives. A counter above ``max_deliveries``
therefore means that many workers died in this job.

A worker thread writes these marks for its whole batch (``libs.middleware.concurrency``), and a process
runs many jobs at once, so one job that kills the process leaves a counter on every job in flight with it.
Those are not counted again with the next batch: a job whose counter already exists is a *suspect* and runs
alone in its process, and only such lone runs add to its count (:mod:`libs.middleware.local_jobs`). The
culprit thus reaches the limit; the innocent jobs of its batch complete on their lone run.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from libs import dramatiq_ext
from libs.keys import DELIVERY_COUNTER_TTL_S, DeliveryKeys
from libs.middleware.deadletter import FAILURES, dead_letter
from libs.middleware.retry import OUTCOME

#: Deliveries without completion before a job is dead-lettered as ``worker_died``.
DEFAULT_MAX_DELIVERIES = 3
#: Note on a delivery (:func:`libs.dramatiq_ext.note`): its count, already written by the worker thread.
DELIVERIES = "zq_deliveries"


def delivery_key(broker: Broker, message_id: str) -> str:
    """Redis key counting deliveries of one job."""
    return DeliveryKeys(broker.namespace).count(message_id)  # type: ignore[attr-defined]


class PoisonGuard(Middleware):
    """Count deliveries in Redis; dead-letter a job that was delivered too often without finishing."""

    def __init__(self, *, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        self.max_deliveries = max_deliveries

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Count this delivery durably; skip (and dead-letter) the job when earlier deliveries all died."""
        group_commit = getattr(broker, "group_commit", None)
        premarked = dramatiq_ext.noted(message, DELIVERIES)  # written by the worker thread (batch or lone run)
        if premarked is not None:
            deliveries = premarked
        elif group_commit is not None:
            # Written with other jobs' acks and marks in one round trip; the counter is dropped with the ack.
            deliveries = group_commit.mark(message.message_id)
        else:
            key = delivery_key(broker, message.message_id)
            pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
            pipe.incr(key)
            pipe.expire(key, DELIVERY_COUNTER_TTL_S)
            deliveries, _ = pipe.execute()
        if deliveries > self.max_deliveries:
            dead_letter(
                broker,
                message,
                reason="worker_died",
                attempts=message.options.get(FAILURES, 0) + deliveries - 1,
                error_type="WorkerDied",
                error_message=f"the worker died {deliveries - 1} times while running this job",
            )
            message.options[OUTCOME] = "dead"
            self._forget(broker, message)
            raise SkipMessage("poison message dead-lettered")

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        """The attempt ended with the worker alive: forget its deliveries."""
        self._forget(broker, message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """A skipped job ended too."""
        self._forget(broker, message)

    @staticmethod
    def _forget(broker: Broker, message: MessageProxy) -> None:
        if getattr(broker, "group_commit", None) is None:  # else the batched ack drops the counter
            broker.client.delete(delivery_key(broker, message.message_id))  # type: ignore[attr-defined]
