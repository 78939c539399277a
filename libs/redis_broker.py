"""zapq's Redis broker: Dramatiq's, with acks and delivery counts written in group commits.

Dramatiq acks every message with its own Lua round trip from the worker thread, which dominates a
worker's time (``dramatiq-notes.md``: ~260 µs per round trip, most of a no-op job). Here one background
thread per process, :class:`GroupCommit`, drains whatever acks and delivery marks the worker threads have
handed it into **one** Lua call, then starts again: under load many jobs share a round trip, when idle a
request is written at once.

* Acks are fire-and-forget for the worker thread. A process that dies before its acks were written
  has those jobs redelivered (at-least-once: duplicates, never loss); graceful shutdown flushes them.
* Delivery marks (the poison guard's "this job is starting") are waited for: a job runs only after its
  mark is durable, so a job that kills its worker is always counted. A worker thread's batch is marked
  "fresh only" (:meth:`GroupCommit.claim_deliveries`): a job with an earlier unfinished delivery is not
  counted with the batch but set aside to run alone (:mod:`libs.middleware.local_jobs`).
* Heartbeats are written on Redis's clock (``TIME``), here and in Dramatiq's ``dispatch.lua`` (patched,
  :data:`libs.dramatiq_ext.DISPATCH`): a worker whose host clock is off is neither taken for dead by the others
  nor takes them for dead in its own maintenance.

The group commit is not :class:`libs.batching.Coalescer`, the batcher of the async code: its callers are worker
threads, not coroutines (the process's event loop runs the async jobs and must never wait on an ack); acks are
fire-and-forget while delivery marks are waited for, in the same round; and a failed round keeps its acks and
writes them again with a growing pause, where a coalesced batch fails its callers and is done.

Dramatiq's consumer class and dispatch script, which this broker builds on, are in :mod:`libs.dramatiq_ext`; the
keys in :mod:`libs.keys`; the Lua in ``libs/lua/group_commit.lua``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from dramatiq.encoder import Encoder, MessageData
from dramatiq.errors import ConnectionClosed

from libs import contracts, keys, lua
from libs.dramatiq_ext import MIN_PREFETCH, RedisBrokerBase, worker_id

logger = logging.getLogger(__name__)

#: Most requests written in one Lua call (keeps the call's argument list bounded).
MAX_BATCH = 500
#: Longest wait of a worker thread for its delivery marks; past it they count as failed (Redis unavailable).
#: Longer than the client's socket timeout, so a slow Redis normally fails the call itself first.
MARK_WAIT_S = 60.0
#: Pauses between attempts to write acks while Redis refuses them (doubling from the first to the last).
FIRST_RETRY_PAUSE_S = 0.1
MAX_RETRY_PAUSE_S = 5.0

#: Redis errors meaning "Redis cannot take this now" (down, slow, out of memory, a read-only replica after a
#: failover, loading, a cluster without quorum): a job is not at fault, its work is retried once Redis is back.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    ConnectionClosed,
)


class OrjsonEncoder(Encoder):
    """Dramatiq's JSON wire format, encoded and decoded with orjson (same bytes on the wire)."""

    def encode(self, data: MessageData) -> bytes:
        """Serialise a message's dict."""
        return orjson.dumps(data)

    def decode(self, data: bytes) -> MessageData:
        """Parse a message's bytes."""
        return orjson.loads(data)


@dataclass
class _Mark:
    message_id: str
    delta: int = 1
    fresh_only: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    error: BaseException | None = None


#: One finished job for the group commit: (kind ``a`` | ``n``, queue, Redis id, message id).
_Finished = tuple[str, str, str, str]


class GroupCommit:
    """Write acks, nacks and delivery marks of one process in shared Lua calls (see the module docstring).

    Its thread never dies and nobody waits on it unbounded: a failed write (any error — Redis down, slow, out
    of memory, read-only) fails the marks of that round at once (:class:`ConnectionClosed`: their jobs have not
    started and go back to the work queue) and keeps its acks and nacks, which are tried again with a growing
    pause until Redis takes them; a worker thread waits for its marks at most ``MARK_WAIT_S``.
    """

    def __init__(self, broker: RedisBrokerBase, *, counter_ttl: int = keys.DELIVERY_COUNTER_TTL_S) -> None:
        self.broker = broker
        self.counter_ttl = counter_ttl
        names = keys.BrokerKeys(broker.namespace)
        wid = worker_id(broker)
        #: The script's ARGV up to the acks (see ``libs/lua/group_commit.lua``).
        self._header: tuple[Any, ...] = (
            names.acks_of(wid),
            names.queue_prefix,
            keys.MSGS,
            keys.DELAYED,
            keys.DEAD,
            keys.DeliveryKeys(broker.namespace).prefix,
            names.heartbeats,
            wid,
            counter_ttl,
        )
        self._cond = threading.Condition()
        self._finished: list[_Finished] = []
        self._writing: list[_Finished] = []  # of the Lua call in progress
        self._marks: list[_Mark] = []
        self._thread: threading.Thread | None = None
        self._script = broker.client.register_script(lua.source("group_commit"))
        self._retry_at = 0.0  # while acks are refused: when to try them again (monotonic)
        self._pause = FIRST_RETRY_PAUSE_S
        self._failures = 0

    def ack(self, queue_name: str, redis_message_id: str, message_id: str) -> None:
        """Queue an ack (returns at once)."""
        self._queue(("a", queue_name, redis_message_id, message_id))

    def nack(self, queue_name: str, redis_message_id: str, message_id: str) -> None:
        """Queue a nack: the message goes to its queue's dead set (returns at once)."""
        self._queue(("n", queue_name, redis_message_id, message_id))

    def _queue(self, finished: _Finished) -> None:
        with self._cond:
            self._finished.append(finished)
            self._wake()

    def mark(self, message_id: str) -> int:
        """Count a delivery of ``message_id`` durably; returns the count including this one."""
        return self.mark_many([message_id])[0]

    def mark_many(self, message_ids: list[str], *, delta: int = 1) -> list[int]:
        """Add ``delta`` to the delivery counts of ``message_ids`` durably (one wait); returns the counts.

        Raises :class:`ConnectionClosed` when Redis did not take them (within ``MARK_WAIT_S``).
        """
        return self._wait([_Mark(message_id, delta) for message_id in message_ids])

    def claim_deliveries(self, message_ids: list[str]) -> list[int]:
        """Count a first delivery of each of ``message_ids`` durably (one wait).

        Returns per id its count (1) — or, for a job already delivered without finishing (a worker died
        while it ran), minus that earlier count, without counting this delivery: a suspect, to be run alone
        and marked then (:mod:`libs.middleware.local_jobs`). Raises as :meth:`mark_many`.
        """
        return self._wait([_Mark(message_id, fresh_only=True) for message_id in message_ids])

    def _wait(self, marks: list[_Mark]) -> list[int]:
        with self._cond:
            self._marks.extend(marks)
            self._wake()
        deadline = time.monotonic() + MARK_WAIT_S
        for mark in marks:
            if not mark.done.wait(max(0.0, deadline - time.monotonic())):
                raise ConnectionClosed(redis.TimeoutError(f"delivery marks not written within {MARK_WAIT_S:.0f} s"))
            if mark.error is not None:
                raise mark.error
        return [mark.count for mark in marks]

    def pending_ids(self) -> set[str]:
        """Redis ids of the messages whose ack or nack is queued or being written (still in an ack set)."""
        with self._cond:
            return {rid for _, _, rid, _ in (*self._finished, *self._writing)}

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued so far from the calling thread (shutdown), for at most ``timeout`` seconds
        when given; True when nothing is left. Never raises: what is left is written by the group commit's
        thread, or redelivered if the process ends first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                finished, marks = self._take()
            if not finished and not marks:
                return True
            if not self._attempt(finished, marks):
                if deadline is None or time.monotonic() >= deadline:
                    return False
                time.sleep(min(self._pause, max(0.0, deadline - time.monotonic())))

    def _wake(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="zapq-group-commit", daemon=True)
            self._thread.start()
        self._cond.notify()

    def _take(self) -> tuple[list[_Finished], list[_Mark]]:
        finished, self._finished = self._finished[:MAX_BATCH], self._finished[MAX_BATCH:]
        marks, self._marks = self._marks[:MAX_BATCH], self._marks[MAX_BATCH:]
        self._writing = self._writing + finished
        return finished, marks

    def _ready(self) -> bool:
        """Something to write now: marks (tried at once even while acks wait), or acks once their pause is over."""
        return bool(self._marks) or (bool(self._finished) and time.monotonic() >= self._retry_at)

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    while not self._ready():
                        self._cond.wait(max(0.01, self._retry_at - time.monotonic()) if self._finished else None)
                    finished, marks = self._take()
                self._attempt(finished, marks)
            except BaseException:  # pragma: no cover - a bug must not leave every worker thread waiting
                logger.exception("group commit round failed")
                time.sleep(MAX_RETRY_PAUSE_S)

    def _attempt(self, finished: list[_Finished], marks: list[_Mark]) -> bool:
        """Write one round; on failure fail its marks and put its acks back. True when written."""
        try:
            counts = self._write(finished, marks)
        except Exception as exc:
            for mark in marks:
                mark.error = ConnectionClosed(exc)
                mark.done.set()
            with self._cond:
                self._finished[:0] = finished
                self._done_writing(finished)
                self._failures += 1
                self._retry_at = time.monotonic() + self._pause
                pause, self._pause = self._pause, min(MAX_RETRY_PAUSE_S, self._pause * 2)
            if self._failures == 1 or self._failures % 10 == 0:
                logger.warning(
                    "could not write %d ack(s) and %d mark(s) (%s, failure %d); retrying in %.1f s",
                    len(finished),
                    len(marks),
                    type(exc).__name__,
                    self._failures,
                    pause,
                )
            return False
        with self._cond:
            self._done_writing(finished)
            if self._failures:
                logger.warning("acks and marks written again after %d failed attempt(s)", self._failures)
            self._failures, self._pause, self._retry_at = 0, FIRST_RETRY_PAUSE_S, 0.0
        for mark, count in zip(marks, counts, strict=True):
            mark.count = int(count)
            mark.done.set()
        return True

    def _done_writing(self, finished: list[_Finished]) -> None:
        done = set(finished)
        self._writing = [item for item in self._writing if item not in done]

    def _write(self, finished: list[_Finished], marks: list[_Mark]) -> list[Any]:
        args: list[Any] = [*self._header, len(finished)]
        for item in finished:
            args.extend(item)
        args.append(len(marks))
        for mark in marks:
            args.extend((mark.message_id, mark.delta, "1" if mark.fresh_only else "0"))
        counts: list[Any] = self._script(args=args)
        return counts


class ZapqRedisBroker(RedisBrokerBase):
    """A Redis broker whose consumers ack through a per-process :class:`GroupCommit`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group_commit = GroupCommit(self)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer whose window is at least ``MIN_PREFETCH``, except on queues of long jobs (delay queues
        keep Dramatiq's larger one)."""
        if queue_name not in contracts.LONG_JOB_QUEUES:
            prefetch = max(prefetch, MIN_PREFETCH)
        return super().consume(queue_name, prefetch, timeout)
