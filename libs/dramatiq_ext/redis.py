"""Dramatiq's Redis broker internals zapq builds on: its consumer class, its ``dispatch.lua``, its commands.

* :class:`ZapqRedisConsumer` subclasses the private ``_RedisConsumer`` and rewrites its fetch loop over its
  ``message_cache``, ``queued_message_ids``, ``misses``, ``prefetch`` and ``timeout``, with acks handed to the
  broker's group commit (:class:`libs.redis_broker.GroupCommit`, reached as ``broker.group_commit``).
* :class:`RedisBrokerBase` installs it through the undocumented ``consumer_class`` hook and replaces
  ``scripts["dispatch"]`` with :data:`DISPATCH`: Dramatiq's ``dispatch.lua`` (from its private ``_scripts``)
  with its timestamp read from Redis's clock.
* :func:`maintain` calls that script directly (its ARGV layout, ``_max_unpack_size()``), :func:`requeue` its
  ``do_requeue`` command (the consumer its ``do_fetch``), :func:`worker_id` reads ``broker_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.redis import _scripts as _dramatiq_scripts
from dramatiq.common import compute_backoff, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware, MiddlewareError

from libs import contracts, lua

logger = logging.getLogger(__name__)

#: Smallest prefetch window of a consumer: refilled half at a time, so each fetch brings at least 128.
MIN_PREFETCH = 256
#: Longest wait of a consumer whose prefetch window is full before it looks at its stop flags again.
FULL_WINDOW_WAIT_S = 0.1
#: Longest time a closing consumer spends writing the process's pending acks (the rest are redelivered).
CLOSE_FLUSH_S = 2.0

#: The line of Dramatiq's ``dispatch.lua`` that reads the caller's clock.
DISPATCH_TIMESTAMP = b"local timestamp = ARGV[2]"
if DISPATCH_TIMESTAMP not in _dramatiq_scripts["dispatch"]:  # pragma: no cover - guards a Dramatiq upgrade
    raise ImportError("dramatiq's dispatch.lua changed: zapq's Redis-clock patch no longer applies")
#: Dramatiq's ``dispatch.lua`` with its timestamp taken from Redis's clock instead of the caller's: heartbeats,
#: dead-worker detection in maintenance and dead-set scores all use one clock, so worker hosts whose clocks
#: disagree still agree on who is alive.
DISPATCH = _dramatiq_scripts["dispatch"].replace(
    DISPATCH_TIMESTAMP, f"local timestamp = {lua.source('redis_clock_ms').strip()}".encode(), 1
)


class ZapqRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer with acks handed to the broker's group commit, refilled on demand."""

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


class RedisBrokerBase(RedisBroker):
    """Dramatiq's :class:`RedisBroker` on Redis's clock (:data:`DISPATCH`) with :class:`ZapqRedisConsumer` s.

    A subclass must give it a ``group_commit`` (what the consumers ack through).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scripts["dispatch"] = self.client.register_script(DISPATCH)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        """Consumers that ack through the group commit."""
        return ZapqRedisConsumer

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_before``, calling only the middleware that override the hook.

        Dramatiq calls every middleware's hook for every signal, most of them :class:`Middleware`'s own no-ops
        (for a no-op job, the hook fan-out was ~17 % of the worker's GIL time: see bench/README.md). Same
        order, same error handling: a ``MiddlewareError`` propagates, anything else is logged. A signal
        :class:`Middleware` does not define goes through Dramatiq's own loop.
        """
        name = "before_" + signal
        found = self._overriding(name, reverse=False)
        if found is None:
            return super().emit_before(signal, *args, **kwargs)
        for middleware in found:
            try:
                getattr(middleware, name)(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_after`` (middleware in reverse order, errors logged), skipping no-op hooks."""
        name = "after_" + signal
        found = self._overriding(name, reverse=True)
        if found is None:
            return super().emit_after(signal, *args, **kwargs)
        for middleware in found:
            try:
                getattr(middleware, name)(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def _overriding(self, name: str, *, reverse: bool) -> list[Any] | None:
        """The middleware whose ``name`` hook is not :class:`Middleware`'s no-op, in call order; ``None`` when
        :class:`Middleware` has no such hook.

        Cached per middleware list: rebuilt whenever the list does not hold the same objects as when it was
        built (``add_middleware`` appends to it; tests may replace it). The hook itself is looked up at each
        call, as Dramatiq does.
        """
        noop = getattr(Middleware, name, None)
        if noop is None:
            return None
        middleware = tuple(self.middleware)
        cache: dict[tuple[str, bool], list[Any]] | None = getattr(self, "_zapq_hooks", None)
        if cache is None or getattr(self, "_zapq_hooks_for", None) != middleware:
            cache = {}
            self._zapq_hooks, self._zapq_hooks_for = cache, middleware
        found = cache.get((name, reverse))
        if found is None:
            ordered = reversed(middleware) if reverse else middleware
            found = [m for m in ordered if _overrides(m, name, noop)]
            cache[(name, reverse)] = found
        return found


def _overrides(middleware: Any, name: str, noop: Any) -> bool:
    """True when ``middleware``'s ``name`` hook is not :class:`Middleware`'s no-op (class or instance level)."""
    return name in vars(middleware) or getattr(type(middleware), name, None) is not noop


def worker_id(broker: Any) -> str:
    """The id this broker's process has in Redis (its heartbeat, its ack sets)."""
    return str(broker.broker_id)


def maintain(broker: Any, queues: Iterable[str]) -> None:
    """Heartbeat ``broker`` and run Dramatiq's maintenance on ``queues`` and their delay queues: requeue the
    unacked messages of dead workers (and purge old dead-set entries)."""
    dispatch = broker.scripts["dispatch"]
    now = int(time.time() * 1000)  # ignored by zapq's dispatch script, which reads Redis's clock
    for queue in sorted(queues):
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


def requeue(broker: Any, queue: str, redis_ids: Iterable[str]) -> None:
    """Move ``redis_ids`` from this process's ack set of ``queue`` back to the tail of ``queue``."""
    broker.do_requeue(queue, *redis_ids)
