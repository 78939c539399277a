"""The jobs one worker process holds in its threads, and the suspects it runs alone.

**Ownership.** A job a worker thread took from the work queue is in none of Dramatiq's queues while it waits
its turn in the thread's batch, while its delivery mark is written, or while it runs. :class:`LocalJobs`
counts it as held from the moment it is taken until it is acked, nacked or handed back, so dead-worker
recovery (:meth:`libs.middleware.recovery.DeadWorkerRecovery.held`) never requeues it under a live thread.

**Isolation.** A job that was delivered before without finishing (its delivery counter already exists when it
is taken again) may be what killed the process — or may just have been in flight beside what did. Counting
that death against every job of the batch would dead-letter the innocent ones with the culprit. So such a
*suspect* is not run with the others: it waits here until no other job of the process is taken or running,
then runs alone, and only that lone run counts as a delivery (:class:`libs.middleware.poison.PoisonGuard`).
A death during it was the suspect's own.

Shared by the :class:`~libs.middleware.concurrency.BatchingWorkerThread` s of one worker process.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from dramatiq.broker import MessageProxy


def redis_id(message: MessageProxy) -> str:
    """The id a message has in Redis (in its queue, its ack set)."""
    return str(message.options.get("redis_message_id", ""))


class LocalJobs:
    """Jobs taken by the worker threads of one process, and the suspects waiting to run alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: Counter[str] = Counter()  # a redelivered copy may be held beside the original
        #: Fresh jobs taken and not yet released, plus refills in progress (each holds a token).
        self._busy = 0
        self._suspects: deque[Any] = deque()  # work-queue items
        self._isolating = False

    # -- ownership ---------------------------------------------------------------------------------------

    def hold(self, message: MessageProxy) -> None:
        """A thread took ``message``."""
        with self._cond:
            self._held[redis_id(message)] += 1

    def release(self, message: MessageProxy) -> None:
        """``message`` was acked, nacked or handed back to the work queue."""
        rid = redis_id(message)
        with self._cond:
            self._held[rid] -= 1
            if self._held[rid] <= 0:
                del self._held[rid]

    def ids(self) -> set[str]:
        """Redis ids of the jobs held now (suspects included)."""
        with self._cond:
            return set(self._held)

    # -- isolation ---------------------------------------------------------------------------------------

    def blocked(self) -> bool:
        """True while a suspect waits or runs: no fresh job may be taken meanwhile."""
        with self._cond:
            return bool(self._suspects) or self._isolating

    def admit(self) -> bool:
        """Start a refill (it holds a token until :meth:`settle`); False while :meth:`blocked`."""
        with self._cond:
            if self._suspects or self._isolating:
                return False
            self._busy += 1
            return True

    def settle(self, fresh: int) -> None:
        """The refill ended with ``fresh`` jobs to run (its token becomes theirs)."""
        with self._cond:
            self._busy += fresh - 1
            self._cond.notify_all()

    def fresh_done(self) -> None:
        """A fresh job was released."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def suspect(self, item: Any, *, first: bool = False) -> None:
        """Set a suspect aside (still held) until it can run alone; ``first`` puts it at the head of the line."""
        with self._cond:
            if first:
                self._suspects.appendleft(item)
            else:
                self._suspects.append(item)
            self._cond.notify_all()

    def claim(self, timeout: float) -> Any | None:
        """The next suspect, once no other job is taken or running; ``None`` after ``timeout`` seconds."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: not self._suspects or (self._busy == 0 and not self._isolating), timeout
            )
            if not ready or not self._suspects:
                return None
            self._isolating = True
            return self._suspects.popleft()

    def end_isolation(self) -> None:
        """The suspect's lone run ended (or was handed back with :meth:`suspect`)."""
        with self._cond:
            self._isolating = False
            self._cond.notify_all()

    def take_suspects(self) -> list[Any]:
        """Remove and return every waiting suspect (a stopping worker hands them back to its work queue)."""
        with self._cond:
            items = list(self._suspects)
            self._suspects.clear()
            self._cond.notify_all()
            return items
