"""Every job's life in Redis (state, timings, worker, last error) and per-queue rates, cheap on the hot path.

Hooks only append a small tuple to an in-memory buffer; a background thread flushes the buffer every
``flush_interval`` seconds (≈ 100 ms) in one pipeline: the updates go as the arguments of a Lua script
(:data:`APPLY_LUA`, chunks of ``CHUNK`` updates) that applies them in order inside Redis, so the flush
costs one round trip and almost no Python per update. No hook ever waits on Redis (which is why this buffer is
not the awaited :class:`libs.batching.Coalescer`: see that module). Keys
(:class:`libs.keys.LifecycleKeys`), under ``<namespace>:zapq:``:

* ``job:<message_id>`` HASH, TTL ``job_ttl`` (24 h): ``state`` (waiting | delayed | running | succeeded |
  failed | dead | deferred | skipped), ``queue``, ``actor``, ``enqueued_at``, ``seq``, ``eta`` and
  ``next_retry_at`` (when a delayed / failed / deferred job runs next), ``started_at``, ``worker``
  (host:pid:thread), ``finished_at``, ``duration_ms``, ``failures``, ``last_error_type``, ``last_error``
  (truncated exception text, never the job's arguments). Times are Unix seconds.
* ``stats:<queue>:<epoch_minute>`` HASH, TTL ``stats_ttl`` (2 h): ``completed``, ``failed`` (failed
  attempts), ``dead``, ``deferred``, ``duration_ms_sum`` (of completed jobs).
* ``totals:<queue>`` HASH, no TTL: the same counters since the beginning (Prometheus counters).
* ``durations:<queue>`` LIST: the last ``durations_kept`` (1,000) durations of completed jobs, newest first.
* ``queue_waits`` HASH: the wait of every started job, as a histogram per queue (:mod:`libs.middleware.queuewait`).
* ``seq:<queue>``: INCR per job entering the queue (stored in the job hash as ``seq``);
  ``taken:<queue>``: INCR per job a worker starts. A waiting job's position is ``seq − taken``.

The position is O(1) and approximate: jobs prefetched by a worker but not started yet still count as ahead;
a job requeued after a worker crash is taken twice but entered once (positions drift low until the queue
empties); jobs enqueued by :func:`libs.enqueue.enqueue_many` advance ``seq`` (and get a job hash only with
``lifecycle=True``).

Outcomes of a failed attempt come from :class:`~libs.middleware.retry.RetryMiddleware`, which marks the
message (``options["zq_outcome"]`` = retry | dead | deferred) in its ``after_process_message``. Dramatiq runs
``after_*`` hooks in reverse order, so this middleware must be listed **before** ``RetryMiddleware``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy

from libs import lua
from libs.dramatiq_ext import q_name
from libs.errors import Defer
from libs.keys import SEP, LifecycleKeys
from libs.middleware.deadletter import FAILURES, AnyMessage, qualified_name
from libs.middleware.queuewait import QueueWaits, waited
from libs.middleware.retry import OUTCOME

logger = logging.getLogger(__name__)

#: Seconds between two flushes of the buffer.
DEFAULT_FLUSH_INTERVAL = 0.1
#: How long a job's hash is kept after its last change.
DEFAULT_JOB_TTL_SECONDS = 24 * 3600
#: How long per-minute counters are kept.
DEFAULT_STATS_TTL_SECONDS = 2 * 3600
#: Recent durations kept per queue (for p95).
DEFAULT_DURATIONS_KEPT = 1000
#: Updates buffered at most (Redis down): beyond this the oldest are dropped — monitoring is best effort.
DEFAULT_MAX_BUFFER = 500_000
#: Characters of an exception's text kept in ``last_error``.
MAX_ERROR_TEXT = 300
#: Updates per Lua call (each call blocks Redis while it runs: keep it to a few milliseconds).
CHUNK = 2000

#: The script applying buffered updates in order (its ARGV: ``libs/lua/lifecycle_apply.lua``); records of ``WIDTH``
#: fields follow its header (:func:`apply_header`).
APPLY_LUA = lua.source("lifecycle_apply")
WIDTH = 11
_PAD6 = ("",) * 6
_PAD5 = ("",) * 5


def waiting_records(messages: Iterable[AnyMessage], at: float) -> list[Any]:
    """:data:`APPLY_LUA` records of jobs that just entered their queue (bulk enqueues)."""
    args: list[Any] = []
    for message in messages:
        args.extend(("E", q_name(message.queue_name), message.message_id, message.actor_name, at, *_PAD6))
    return args


def apply_header(
    keys: LifecycleKeys,
    *,
    job_ttl: int = DEFAULT_JOB_TTL_SECONDS,
    stats_ttl: int = DEFAULT_STATS_TTL_SECONDS,
    durations_kept: int = DEFAULT_DURATIONS_KEPT,
) -> list[Any]:
    """The ARGV of an :data:`APPLY_LUA` call before its records: key prefixes, TTLs, durations kept."""
    return [
        keys.job_prefix,
        keys.seq_prefix,
        keys.stats_prefix,
        keys.totals_prefix,
        keys.taken_prefix,
        keys.durations_prefix,
        SEP,
        job_ttl,
        stats_ttl,
        durations_kept,
    ]


def apply_args(keys: LifecycleKeys, records: list[Any], *, job_ttl: int = DEFAULT_JOB_TTL_SECONDS) -> list[Any]:
    """The full ARGV of one :data:`APPLY_LUA` call."""
    return [*apply_header(keys, job_ttl=job_ttl), *records]


class Lifecycle(Middleware):
    """Record each job's life and each queue's rates in Redis, buffered and flushed in the background."""

    def __init__(
        self,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        job_ttl_seconds: int = DEFAULT_JOB_TTL_SECONDS,
        stats_ttl_seconds: int = DEFAULT_STATS_TTL_SECONDS,
        durations_kept: int = DEFAULT_DURATIONS_KEPT,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.flush_interval = flush_interval
        self.job_ttl_seconds = job_ttl_seconds
        self.stats_ttl_seconds = stats_ttl_seconds
        self.durations_kept = durations_kept
        self.max_buffer = max_buffer
        self.dropped = 0
        self._ops: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._started: dict[str, float] = {}
        self.waits = QueueWaits()
        self._client: Any = None
        self._keys: LifecycleKeys | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._host = f"{socket.gethostname()}:{os.getpid()}"
        _INSTANCES.add(self)

    # -- hooks (hot path: no I/O) -------------------------------------------------------------------------

    def after_enqueue(self, broker: Broker, message: AnyMessage, delay: int | None) -> None:
        """The job entered its queue (waiting) or its delay queue (delayed until ``eta``)."""
        queue, now = q_name(message.queue_name), time.time()
        if delay is None:
            self._push(broker, ("E", queue, message.message_id, message.actor_name, now, *_PAD6))
        else:
            due = message.options.get("eta", now * 1000) / 1000
            self._push(broker, ("D", queue, message.message_id, message.actor_name, now, due, *_PAD5))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """A worker started the job."""
        now = time.time()
        self._started[_delivery(message)] = now
        worker = f"{self._host}:{threading.current_thread().name}"
        queue = q_name(message.queue_name)
        self.waits.observe(queue, waited(message, now))
        self._push(broker, ("S", queue, message.message_id, message.actor_name, now, worker, *_PAD5))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """The attempt ended: succeeded, or failed and (per the retry middleware) retried, dead or deferred."""
        now = time.time()
        started = self._started.pop(_delivery(message), None)
        duration: Any = round((now - started) * 1000, 1) if started is not None else ""
        queue = q_name(message.queue_name)
        op: tuple[Any, ...]
        if exception is None:
            op = ("F", queue, message.message_id, message.actor_name, now, "succeeded", duration, "", "", "", "")
        else:
            # The retry middleware's marker; without one: nacked into Dramatiq's dead set, deferred, or failed.
            fallback = "dead" if message.failed else "deferred" if isinstance(exception, Defer) else "failed"
            outcome = message.options.get(OUTCOME) or fallback
            deferred = outcome == "deferred" or isinstance(exception, Defer)
            failures = message.options.get(FAILURES, 0) + (0 if deferred else 1)
            error = (qualified_name(type(exception)), str(exception)[:MAX_ERROR_TEXT], "" if deferred else "1")
            op = ("F", queue, message.message_id, message.actor_name, now, outcome, duration, failures, *error)
        self._push(broker, op)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """The job was skipped (too old, poison, a stale periodic tick): dead when it went to Dramatiq's DLQ."""
        now = time.time()
        queue, actor = q_name(message.queue_name), message.actor_name
        if self._started.pop(_delivery(message), None) is None:
            # The skip came from a middleware before this one: count the job as taken all the same.
            self._push(broker, ("T", queue, message.message_id, actor, now, *_PAD6))
        outcome = message.options.get(OUTCOME) or ("dead" if message.failed else "skipped")
        self._push(broker, ("F", queue, message.message_id, actor, now, outcome, *_PAD5))

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Flush what the last jobs recorded."""
        self.close()

    # -- buffer ---------------------------------------------------------------------------------------------

    def _push(self, broker: Broker, op: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._start(broker)
        with self._lock:
            if len(self._ops) >= self.max_buffer:
                del self._ops[: len(self._ops) // 10]
                self.dropped += self.max_buffer // 10
            self._ops.append(op)

    def _start(self, broker: Broker) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._client = broker.client  # type: ignore[attr-defined]
            self._keys = LifecycleKeys(broker.namespace)  # type: ignore[attr-defined]
            self._stop.clear()
            thread = threading.Thread(target=self._run, name="zapq-lifecycle", daemon=True)
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()
        self.flush()

    def close(self) -> None:
        """Stop the flush thread after a last flush (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
        self.flush()

    def _after_fork(self) -> None:
        self._ops, self._started, self._thread, self.waits = [], {}, None, QueueWaits()
        self._lock, self._flush_lock = threading.Lock(), threading.Lock()
        self._host = f"{socket.gethostname()}:{os.getpid()}"

    def flush(self) -> int:
        """Write everything buffered now (tests call this instead of waiting); returns the updates written."""
        with self._flush_lock:
            with self._lock:
                ops, self._ops = self._ops, []
            if not ops or self._client is None or self._keys is None:
                return 0
            try:
                self._write(ops)
            except Exception:  # Redis down: lose this batch of monitoring data, never the jobs
                self.dropped += len(ops)
                logger.warning("lifecycle flush of %d updates failed", len(ops), exc_info=True)
                return 0
            return len(ops)

    def _write(self, ops: list[tuple[Any, ...]]) -> None:
        assert self._keys is not None
        header = apply_header(
            self._keys,
            job_ttl=self.job_ttl_seconds,
            stats_ttl=self.stats_ttl_seconds,
            durations_kept=self.durations_kept,
        )
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(ops), CHUNK):
            records = [field for op in ops[start : start + CHUNK] for field in op]
            pipe.eval(APPLY_LUA, 0, *header, *records)
        self.waits.write(pipe, self._keys)  # every start pushed an op: the waits go with them
        pipe.execute()


def _delivery(message: MessageProxy) -> str:
    return str(message.options.get("redis_message_id") or message.message_id)


_INSTANCES: weakref.WeakSet[Lifecycle] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for instance in list(_INSTANCES):
        instance._after_fork()


def _close_all() -> None:
    for instance in list(_INSTANCES):
        with contextlib.suppress(Exception):  # interpreter shutdown: best effort
            instance.close()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_close_all)
