"""Every job's life in Redis (state, timings, worker, last error) and per-queue rates, cheap on the hot path.

Hooks only append a small tuple to an in-memory buffer; a background thread flushes the buffer every
``flush_interval`` seconds (≈ 100 ms) in one pipeline (two when jobs entered a queue: their sequence numbers
are reserved first). No hook ever waits on Redis. Keys, under ``<namespace>:zapq:``:

* ``job:<message_id>`` HASH, TTL ``job_ttl`` (24 h): ``state`` (waiting | delayed | running | succeeded |
  failed | dead | deferred | skipped), ``queue``, ``actor``, ``enqueued_at``, ``seq``, ``eta`` and
  ``next_retry_at`` (when a delayed / failed / deferred job runs next), ``started_at``, ``worker``
  (host:pid:thread), ``finished_at``, ``duration_ms``, ``failures``, ``last_error_type``, ``last_error``
  (truncated exception text, never the job's arguments). Times are Unix seconds.
* ``stats:<queue>:<epoch_minute>`` HASH, TTL ``stats_ttl`` (2 h): ``completed``, ``failed`` (failed
  attempts), ``dead``, ``deferred``, ``duration_ms_sum`` (of completed jobs).
* ``totals:<queue>`` HASH, no TTL: the same counters since the beginning (Prometheus counters).
* ``durations:<queue>`` LIST: the last ``durations_kept`` (1,000) durations of completed jobs, newest first.
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
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name

from libs.errors import Defer
from libs.middleware.deadletter import FAILURES, AnyMessage, qualified_name
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

STATES = ("waiting", "delayed", "running", "succeeded", "failed", "dead", "deferred", "skipped")

# Buffered operations (plain tuples: building them is all a hook does).
_ENQUEUED, _STARTED, _FINISHED = 0, 1, 2
#: Outcome of a finished attempt → the job's state.
_STATE_OF = {"succeeded": "succeeded", "retry": "failed", "failed": "failed", "dead": "dead", "deferred": "deferred"}
_CLEAR_TIMES = dict.fromkeys(("eta", "next_retry_at"))


@dataclass(frozen=True, slots=True)
class LifecycleKeys:
    """Names of the lifecycle keys of one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:``."""
        return f"{self.namespace}:zapq:"

    def job(self, message_id: str) -> str:
        """The hash of one job."""
        return f"{self.prefix}job:{message_id}"

    def stats(self, queue: str, minute: int) -> str:
        """Counters of ``queue`` during the Unix minute ``minute``."""
        return f"{self.prefix}stats:{queue}:{minute}"

    def totals(self, queue: str) -> str:
        """All-time counters of ``queue``."""
        return f"{self.prefix}totals:{queue}"

    def durations(self, queue: str) -> str:
        """Recent durations (ms) of completed jobs of ``queue``."""
        return f"{self.prefix}durations:{queue}"

    def seq(self, queue: str) -> str:
        """Jobs that entered ``queue``."""
        return f"{self.prefix}seq:{queue}"

    def taken(self, queue: str) -> str:
        """Jobs of ``queue`` a worker started."""
        return f"{self.prefix}taken:{queue}"


def waiting_fields(message: AnyMessage, at: float, seq: int | None) -> dict[str, Any]:
    """Hash fields of a job that just entered its queue (``None`` = delete the field)."""
    return {
        "state": "waiting",
        "queue": q_name(message.queue_name),
        "actor": message.actor_name,
        "enqueued_at": _ts(at),
        "seq": seq,
        **_CLEAR_TIMES,
    }


def _ts(value: float) -> str:
    return f"{value:.3f}"


class _JobUpdate:
    """Field changes of one job accumulated during one flush (later changes win; ``None`` deletes)."""

    __slots__ = ("deleted", "fields")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.deleted: set[str] = set()

    def update(self, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            if value is None:
                self.fields.pop(name, None)
                self.deleted.add(name)
            else:
                self.fields[name] = value
                self.deleted.discard(name)


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
        self._client: Any = None
        self._keys: LifecycleKeys | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._host = f"{socket.gethostname()}:{os.getpid()}"
        _INSTANCES.add(self)

    # -- hooks (hot path: no I/O) -------------------------------------------------------------------------

    def after_enqueue(self, broker: Broker, message: AnyMessage, delay: int | None) -> None:
        """The job entered its queue (waiting) or its delay queue (delayed until ``eta``)."""
        eta = message.options.get("eta") if delay is not None else None
        self._push(broker, (_ENQUEUED, q_name(message.queue_name), message.message_id, time.time(), message, eta))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """A worker started the job."""
        now = time.time()
        self._started[_delivery(message)] = now
        worker = f"{self._host}:{threading.current_thread().name}"
        self._push(broker, (_STARTED, q_name(message.queue_name), message.message_id, now, message, worker))

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """The attempt ended: succeeded, or failed and (per the retry middleware) retried, dead or deferred."""
        now = time.time()
        started = self._started.pop(_delivery(message), None)
        duration = (now - started) * 1000 if started is not None else None
        if exception is None:
            outcome, error = "succeeded", None
        else:
            deferred = isinstance(exception, Defer)
            outcome = message.options.get(OUTCOME) or ("deferred" if deferred else "failed")
            failures = message.options.get(FAILURES, 0) + (0 if deferred else 1)
            error = (qualified_name(type(exception)), str(exception)[:MAX_ERROR_TEXT], not deferred, failures)
        op = (_FINISHED, q_name(message.queue_name), message.message_id, now, message, outcome, duration, error)
        self._push(broker, op)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """The job was skipped (too old, poison, a stale periodic tick): dead when it went to Dramatiq's DLQ."""
        now = time.time()
        queue = q_name(message.queue_name)
        if self._started.pop(_delivery(message), None) is None:
            # The skip came from a middleware before this one: count the job as taken all the same.
            self._push(broker, (_STARTED, queue, message.message_id, now, message, None))
        outcome = message.options.get(OUTCOME) or ("dead" if message.failed else "skipped")
        self._push(broker, (_FINISHED, queue, message.message_id, now, message, outcome, None, None))

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
        self._ops, self._started, self._thread = [], {}, None
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
        keys = self._keys
        assert keys is not None
        entering = Counter(op[1] for op in ops if op[0] == _ENQUEUED and op[5] is None)
        next_seq: dict[str, int] = {}
        if entering:
            reserve = self._client.pipeline(transaction=False)
            for queue, count in entering.items():
                reserve.incrby(keys.seq(queue), count)
            for (queue, count), last in zip(entering.items(), reserve.execute(), strict=True):
                next_seq[queue] = int(last) - count + 1

        jobs: dict[str, _JobUpdate] = defaultdict(_JobUpdate)
        minute_counts: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        totals: dict[str, Counter[str]] = defaultdict(Counter)
        durations: dict[str, list[float]] = defaultdict(list)
        taken: Counter[str] = Counter()
        for op in ops:
            kind, queue, message_id, at, message = op[:5]
            job = jobs[message_id]
            if kind == _ENQUEUED:
                eta = op[5]
                if eta is None:
                    seq = next_seq[queue]
                    next_seq[queue] = seq + 1
                    job.update(waiting_fields(message, at, seq))
                else:
                    due = _ts(eta / 1000)
                    job.update(
                        {"state": "delayed", "queue": queue, "actor": message.actor_name, "enqueued_at": _ts(at)}
                    )
                    job.update({"seq": None, "eta": due, "next_retry_at": due})
            elif kind == _STARTED:
                taken[queue] += 1
                if op[5] is not None:
                    job.update({"state": "running", "queue": queue, "actor": message.actor_name})
                    job.update({"started_at": _ts(at), "worker": op[5], "finished_at": None, "duration_ms": None})
                    job.update(_CLEAR_TIMES)
            else:
                outcome, duration, error = op[5], op[6], op[7]
                changes: dict[str, Any] = {"state": _STATE_OF.get(outcome, outcome), "finished_at": _ts(at)}
                if duration is not None:
                    changes["duration_ms"] = f"{duration:.1f}"
                if error is not None:
                    changes.update(failures=error[3], last_error_type=error[0], last_error=error[1])
                if outcome in ("succeeded", "dead", "skipped"):
                    changes.update(_CLEAR_TIMES)
                job.update(changes)
                counts = minute_counts[(queue, int(at // 60))]
                for name in _counters(outcome, failed_attempt=error is not None and error[2]):
                    counts[name] += 1
                    totals[queue][name] += 1
                if outcome == "succeeded" and duration is not None:
                    counts["duration_ms_sum"] += round(duration, 1)
                    durations[queue].append(round(duration, 1))

        pipe = self._client.pipeline(transaction=False)
        for message_id, job in jobs.items():
            key = keys.job(message_id)
            if job.deleted:
                pipe.hdel(key, *job.deleted)
            if job.fields:
                pipe.hset(key, mapping=job.fields)
            pipe.expire(key, self.job_ttl_seconds)
        for (queue, minute), counts in minute_counts.items():
            key = keys.stats(queue, minute)
            for name, value in counts.items():
                if name == "duration_ms_sum":
                    pipe.hincrbyfloat(key, name, round(value, 1))
                else:
                    pipe.hincrby(key, name, int(value))
            pipe.expire(key, self.stats_ttl_seconds)
        for queue, total in totals.items():
            for name, count in total.items():
                pipe.hincrby(keys.totals(queue), name, count)
        for queue, values in durations.items():
            pipe.lpush(keys.durations(queue), *values)
            pipe.ltrim(keys.durations(queue), 0, self.durations_kept - 1)
        for queue, count in taken.items():
            pipe.incrby(keys.taken(queue), count)
        pipe.execute()


def _counters(outcome: str, *, failed_attempt: bool) -> tuple[str, ...]:
    """Counters one finished attempt increments."""
    if outcome == "succeeded":
        return ("completed",)
    if outcome == "deferred":
        return ("deferred",)
    if outcome == "dead":
        return ("failed", "dead") if failed_attempt else ("dead",)
    return ("failed",) if failed_attempt else ()


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
