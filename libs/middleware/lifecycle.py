"""Every job's life in Redis (state, timings, worker, last error) and per-queue rates, cheap on the hot path.

Hooks only append a small tuple to an in-memory buffer; a background thread flushes the buffer every
``flush_interval`` seconds (≈ 100 ms) in one pipeline: the updates go as the arguments of a Lua script
(:data:`APPLY_LUA`, chunks of ``CHUNK`` updates) that applies them in order inside Redis, so the flush
costs one round trip and almost no Python per update. No hook ever waits on Redis. Keys, under
``<namespace>:zapq:``:

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
from collections.abc import Iterable
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
#: Updates per Lua call (each call blocks Redis while it runs: keep it to a few milliseconds).
CHUNK = 2000

#: Applies buffered updates in order. ARGV: prefix, job TTL, stats TTL, durations kept, then records of
#: ``WIDTH`` fields: kind (E waiting | D delayed | S started | T taken only | F finished), queue, message id,
#: actor, time, then per kind — D: eta; S: worker; F: outcome, duration ms, failures, error type, error text,
#: "1" when the attempt failed (not a deferral).
APPLY_LUA = """
local prefix, job_ttl, stats_ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local states = {succeeded="succeeded", retry="failed", failed="failed", dead="dead", deferred="deferred"}
local jobs, order, counters, taken, durations = {}, {}, {}, {}, {}
local function set(mid, ...)
  local job = jobs[mid]
  if not job then job = {}; jobs[mid] = job; order[#order + 1] = mid end
  local pairs_ = {...}
  for k = 1, #pairs_, 2 do job[pairs_[k]] = pairs_[k + 1] end
end
-- Records from several processes (a producer's buffer, a worker's) may arrive out of order: a job's fields
-- only move forward in time ("updated_at"); its counters always count.
local latest = {}
local function fresh(mid, at)
  local known = latest[mid]
  if known == nil then
    known = tonumber(redis.call("hget", prefix .. "job:" .. mid, "updated_at")) or 0
  end
  local now = tonumber(at)
  if now < known then latest[mid] = known; return false end
  latest[mid] = now
  return true
end
local function count(key, name, by)
  local c = counters[key]
  if not c then c = {}; counters[key] = c end
  c[name] = (c[name] or 0) + by
end
for i = 5, #ARGV, 11 do
  local kind, queue, mid, actor, at = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local current = fresh(mid, at)
  if kind == "E" then
    local seq = redis.call("incr", prefix .. "seq:" .. queue)
    if current then set(mid, "state", "waiting", "queue", queue, "actor", actor, "enqueued_at", at, "seq", seq,
        "eta", false, "next_retry_at", false) end
  elseif kind == "D" then
    if current then set(mid, "state", "delayed", "queue", queue, "actor", actor, "enqueued_at", at, "eta", ARGV[i+5],
        "next_retry_at", ARGV[i+5], "seq", false) end
  elseif kind == "S" or kind == "T" then
    taken[queue] = (taken[queue] or 0) + 1
    if kind == "S" and current then
      set(mid, "state", "running", "queue", queue, "actor", actor, "started_at", at, "worker", ARGV[i+5],
          "finished_at", false, "duration_ms", false, "eta", false, "next_retry_at", false)
    end
  elseif kind == "F" then
    local outcome, duration, failures = ARGV[i+5], ARGV[i+6], ARGV[i+7]
    if current then
      set(mid, "state", states[outcome] or outcome, "finished_at", at)
      if duration ~= "" then set(mid, "duration_ms", duration) end
      if failures ~= "" then set(mid, "failures", failures, "last_error_type", ARGV[i+8], "last_error", ARGV[i+9]) end
      if outcome == "succeeded" or outcome == "dead" or outcome == "skipped" then
        set(mid, "eta", false, "next_retry_at", false)
      end
    end
    local minute = queue .. ":" .. math.floor(tonumber(at) / 60)
    local names = {}
    if outcome == "succeeded" then names = {"completed"}
    elseif outcome == "deferred" then names = {"deferred"}
    elseif outcome == "dead" then names = {"dead"} end
    if ARGV[i+10] == "1" then names[#names + 1] = "failed" end
    for _, name in ipairs(names) do
      count("stats:" .. minute, name, 1)
      count("totals:" .. queue, name, 1)
    end
    if outcome == "succeeded" and duration ~= "" then
      count("stats:" .. minute, "duration_ms_sum", tonumber(duration))
      local list = durations[queue]
      if not list then list = {}; durations[queue] = list end
      list[#list + 1] = duration
    end
  end
end
for _, mid in ipairs(order) do
  jobs[mid]["updated_at"] = tostring(latest[mid])
  local key, sets, dels = prefix .. "job:" .. mid, {}, {}
  for name, value in pairs(jobs[mid]) do
    if value == false then dels[#dels + 1] = name else sets[#sets + 1] = name; sets[#sets + 1] = value end
  end
  if #dels > 0 then redis.call("hdel", key, unpack(dels)) end
  if #sets > 0 then redis.call("hset", key, unpack(sets)) end
  redis.call("expire", key, job_ttl)
end
for key, names in pairs(counters) do
  local full = prefix .. key
  for name, value in pairs(names) do
    if name == "duration_ms_sum" then redis.call("hincrbyfloat", full, name, value)
    else redis.call("hincrby", full, name, value) end
  end
  if string.sub(key, 1, 6) == "stats:" then redis.call("expire", full, stats_ttl) end
end
for queue, n in pairs(taken) do redis.call("incrby", prefix .. "taken:" .. queue, n) end
for queue, list in pairs(durations) do
  local key = prefix .. "durations:" .. queue
  for k = 1, #list, 1000 do redis.call("lpush", key, unpack(list, k, math.min(k + 999, #list))) end
  redis.call("ltrim", key, 0, keep - 1)
end
return 0
"""
WIDTH = 11
_PAD6 = ("",) * 6
_PAD5 = ("",) * 5


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


def waiting_records(messages: Iterable[AnyMessage], at: float) -> list[Any]:
    """:data:`APPLY_LUA` records of jobs that just entered their queue (bulk enqueues)."""
    args: list[Any] = []
    for message in messages:
        args.extend(("E", q_name(message.queue_name), message.message_id, message.actor_name, at, *_PAD6))
    return args


def apply_args(keys: LifecycleKeys, records: list[Any], *, job_ttl: int = DEFAULT_JOB_TTL_SECONDS) -> list[Any]:
    """The full ARGV of one :data:`APPLY_LUA` call."""
    return [keys.prefix, job_ttl, DEFAULT_STATS_TTL_SECONDS, DEFAULT_DURATIONS_KEPT, *records]


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
        assert self._keys is not None
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(ops), CHUNK):
            records = [field for op in ops[start : start + CHUNK] for field in op]
            args = [self._keys.prefix, self.job_ttl_seconds, self.stats_ttl_seconds, self.durations_kept, *records]
            pipe.eval(APPLY_LUA, 0, *args)
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
