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
* Heartbeats are written on Redis's clock (``TIME``), here and in Dramatiq's ``dispatch.lua`` (patched at
  import, :data:`DISPATCH`): a worker whose host clock is off is neither taken for dead by the others nor
  takes them for dead in its own maintenance.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.redis import _scripts as _dramatiq_scripts
from dramatiq.common import compute_backoff
from dramatiq.encoder import Encoder, MessageData
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from libs import contracts

logger = logging.getLogger(__name__)

#: Redis's own clock in milliseconds, as a Lua expression: every heartbeat is written on it, so worker hosts
#: whose clocks disagree still agree on who is alive (Dramatiq passes each host's own clock).
REDIS_NOW_MS = (
    "(function() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end)()"
)

#: ARGV: namespace, worker id, (unused), counter TTL, then the number of finished jobs and per job its kind
#: (``a`` ack: drop the payload; ``n`` nack: move it to the queue's dead set ``<q>.XQ``, as Dramatiq does), queue,
#: Redis id and message id (its delivery counter is dropped); then the number of marks and per mark the message
#: id, the delta and "1" when only a first delivery may be counted (see :meth:`GroupCommit.claim_deliveries`).
#: Acks come first: a Redis out of memory still runs a script whose first write frees memory.
COMMIT = """
local ns, wid, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local now = REDIS_NOW_MS
local n_acks = tonumber(ARGV[5])
local i = 6
for _ = 1, n_acks do
  local kind, queue, rid, mid = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('srem', ns .. ':__acks__.' .. wid .. '.' .. queue, rid) > 0 then
    local msgs = ns .. ':' .. queue .. '.msgs'
    if kind == 'n' then
      local canonical = string.gsub(queue, '%.DQ$', '')
      local payload = redis.call('hget', msgs, rid)
      if payload then
        redis.call('zadd', ns .. ':' .. canonical .. '.XQ', now, rid)
        redis.call('hset', ns .. ':' .. canonical .. '.XQ.msgs', rid, payload)
      end
    end
    redis.call('hdel', msgs, rid)
  end
  if mid ~= '' then redis.call('del', ns .. ':zapq:deliveries:' .. mid) end
end
redis.call('zadd', ns .. ':__heartbeats__', now, wid)
local n_marks = tonumber(ARGV[i])
i = i + 1
local counts = {}
for k = 1, n_marks do
  local key = ns .. ':zapq:deliveries:' .. ARGV[i]
  local earlier = ARGV[i + 2] == '1' and tonumber(redis.call('get', key) or '0') or 0
  if earlier > 0 then
    counts[k] = -earlier  -- a suspect: delivered before without finishing; not counted now
  else
    counts[k] = redis.call('incrby', key, ARGV[i + 1])
    redis.call('expire', key, ttl)
  end
  i = i + 3
end
return counts
""".replace("REDIS_NOW_MS", REDIS_NOW_MS)

_DRAMATIQ_TIMESTAMP = b"local timestamp = ARGV[2]"
if _DRAMATIQ_TIMESTAMP not in _dramatiq_scripts["dispatch"]:  # pragma: no cover - guards a Dramatiq upgrade
    raise ImportError("dramatiq's dispatch.lua changed: zapq's Redis-clock patch no longer applies")
#: Dramatiq's ``dispatch.lua`` with its timestamp taken from Redis's clock instead of the caller's: heartbeats,
#: dead-worker detection in maintenance and dead-set scores all use one clock.
DISPATCH = _dramatiq_scripts["dispatch"].replace(_DRAMATIQ_TIMESTAMP, f"local timestamp = {REDIS_NOW_MS}".encode(), 1)

#: Delivery counters of jobs nobody finishes expire after this long.
COUNTER_TTL_SECONDS = 7 * 24 * 3600
#: Smallest prefetch window of a consumer: refilled half at a time, so each fetch brings at least 128.
MIN_PREFETCH = 256
#: Longest wait of a consumer whose prefetch window is full before it looks at its stop flags again.
FULL_WINDOW_WAIT_S = 0.1
#: Most requests written in one Lua call (keeps the call's argument list bounded).
MAX_BATCH = 500
#: Longest wait of a worker thread for its delivery marks; past it they count as failed (Redis unavailable).
#: Longer than the client's socket timeout, so a slow Redis normally fails the call itself first.
MARK_WAIT_S = 60.0
#: Pauses between attempts to write acks while Redis refuses them (doubling from the first to the last).
FIRST_RETRY_PAUSE_S = 0.1
MAX_RETRY_PAUSE_S = 5.0
#: Longest time a closing consumer spends writing the process's pending acks (the rest are redelivered).
CLOSE_FLUSH_S = 2.0

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

    def __init__(self, broker: RedisBroker, *, counter_ttl: int = COUNTER_TTL_SECONDS) -> None:
        self.broker = broker
        self.counter_ttl = counter_ttl
        self._cond = threading.Condition()
        self._finished: list[_Finished] = []
        self._writing: list[_Finished] = []  # of the Lua call in progress
        self._marks: list[_Mark] = []
        self._thread: threading.Thread | None = None
        self._script = broker.client.register_script(COMMIT)
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
        args: list[Any] = [
            self.broker.namespace,
            self.broker.broker_id,
            "",  # was the caller's clock; heartbeats are written on Redis's (REDIS_NOW_MS)
            self.counter_ttl,
            len(finished),
        ]
        for item in finished:
            args.extend(item)
        args.append(len(marks))
        for mark in marks:
            args.extend((mark.message_id, mark.delta, "1" if mark.fresh_only else "0"))
        counts: list[Any] = self._script(args=args)
        return counts


class ZapqRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer with acks handed to the process's :class:`GroupCommit`, refilled on demand."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._room = threading.Condition()
        #: Refill the window once it is half empty: one fetch round trip then brings many messages.
        self.low_water = self.prefetch // 2
        #: Longest sleep while the queue is empty.
        self.max_idle_ms = min(self.timeout, contracts.IDLE_POLL_MS.get(self.queue_name, self.timeout))

    def _released(self) -> None:
        if self.outstanding_message_count <= self.low_water:  # only then can a waiting fetch go on
            with self._room:
                self._room.notify()

    def ack(self, message: Any) -> None:
        """Queue the ack; the group commit writes it (with any others) in its next round."""
        try:
            self.broker.group_commit.ack(self.queue_name, message.options["redis_message_id"], message.message_id)
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._released()

    def nack(self, message: Any) -> None:
        """Queue the nack (the message goes to its queue's dead set); the group commit writes it."""
        try:
            self.broker.group_commit.nack(self.queue_name, message.options["redis_message_id"], message.message_id)
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._released()

    def requeue(self, messages: Any) -> None:
        """Dramatiq's requeue; any Redis error is a connection error to Dramatiq's consumer thread."""
        try:
            super().requeue(messages)
        except redis.RedisError as exc:
            raise ConnectionClosed(exc) from None

    def __next__(self) -> Any:
        """Dramatiq's fetch loop, except that a full prefetch window is not an idle queue.

        Dramatiq backs off exponentially (up to the idle timeout) both when the queue is empty and when
        this consumer already holds ``prefetch`` unacked messages, and its window refills only after that
        pause. The second case is a busy worker: here the consumer instead waits until the worker threads
        have finished half the window (each ack wakes it) and fetches the free half in one round trip, so
        the threads never wait for a timer.
        """
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.outstanding_message_count >= self.prefetch:
                    with self._room:
                        room = self._room.wait_for(
                            lambda: self.outstanding_message_count <= self.low_water, FULL_WINDOW_WAIT_S
                        )
                    if not room:
                        return None  # the consumer thread checks whether it should stop
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
                if not self.message_cache:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.max_idle_ms)
                    time.sleep(backoff_ms / 1000)
                    return None
        except redis.RedisError as exc:  # any of them: Dramatiq's consumer thread survives only this one
            raise ConnectionClosed(exc) from None

    def close(self) -> None:
        """Write pending acks (for at most ``CLOSE_FLUSH_S``) before the consumer goes away; never raises.

        Dramatiq calls this on graceful shutdown and on its consumer thread's error path too, where an error
        escaping would end the thread for good.
        """
        try:
            if not self.broker.group_commit.flush(timeout=CLOSE_FLUSH_S):
                logger.warning("closing consumer of %s with acks not yet written (Redis unavailable)", self.queue_name)
        finally:
            super().close()


class ZapqRedisBroker(RedisBroker):
    """A :class:`RedisBroker` whose consumers ack through a per-process :class:`GroupCommit`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scripts["dispatch"] = self.client.register_script(DISPATCH)
        self.group_commit = GroupCommit(self)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        """Consumers that ack through the group commit."""
        return ZapqRedisConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer whose window is at least ``MIN_PREFETCH``, except on queues of long jobs (delay queues
        keep Dramatiq's larger one)."""
        if queue_name not in contracts.LONG_JOB_QUEUES:
            prefetch = max(prefetch, MIN_PREFETCH)
        return super().consume(queue_name, prefetch, timeout)
