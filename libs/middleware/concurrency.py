"""Many I/O-bound async jobs in flight per worker thread, with at-least-once delivery kept.

Dramatiq runs one job per worker thread, so a thread waiting 200 ms on a provider caps a process at
threads ÷ latency sends per second. For actors declared ``concurrent=True`` (``async def``), each worker
thread instead takes up to ``batch_size`` messages already fetched from the work queue, runs every
middleware ``before`` hook for them on the thread, runs their coroutines together on the AsyncIO event
loop, then runs the ``after`` hooks and acks each message on the same thread — so retry policies, dead
letters and the poison guard see exactly what they see for a plain job, and a message is acked only once
its coroutine has finished.

Non-concurrent actors on the same worker are processed one at a time as usual.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from queue import Empty, SimpleQueue
from typing import Any

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.errors import RateLimitExceeded, Retry
from dramatiq.middleware import AsyncIO, CurrentMessage, SkipMessage, TimeLimitExceeded
from dramatiq.worker import WorkerThread

from libs.errors import Defer

#: Jobs one worker thread keeps in flight.
DEFAULT_BATCH_SIZE = 64
#: Ordinary jobs one worker thread takes per refill: enough to share a delivery-mark round trip, few enough
#: that all threads share the consumer's window (at 64, two threads took a window of 128 and six waited).
PLAIN_BATCH = 16
#: Time limit of a concurrent job that declares none (ms), as for other actors.
DEFAULT_TIME_LIMIT_MS = 60_000


class LocalJobs:
    """Every job the worker threads of one process have taken from the work queue and not yet released.

    A job a thread took is in none of Dramatiq's queues while it waits its turn in the thread's batch, while
    its delivery mark is written, or while it runs: this registry is what tells dead-worker recovery that the
    process still holds it (:meth:`libs.middleware.recovery.DeadWorkerRecovery.held`). Shared by the
    process's :class:`BatchingWorkerThread` s; keyed by Redis message id, counted (a redelivered copy may be
    held beside the original).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def hold(self, message: MessageProxy) -> None:
        """A thread took ``message``."""
        with self._lock:
            self._held[_redis_id(message)] += 1

    def release(self, message: MessageProxy) -> None:
        """``message`` was acked, nacked or handed back to the work queue."""
        rid = _redis_id(message)
        with self._lock:
            self._held[rid] -= 1
            if self._held[rid] <= 0:
                del self._held[rid]

    def ids(self) -> set[str]:
        """Redis ids of the jobs held now."""
        with self._lock:
            return set(self._held)


def _redis_id(message: MessageProxy) -> str:
    return str(message.options.get("redis_message_id", ""))


def count_of(message: MessageProxy) -> int | None:
    """The delivery count a worker thread already wrote for ``message`` (``None`` when not pre-marked)."""
    count: int | None = message.__dict__.get("zq_deliveries")
    return count


def _coroutine_function(actor: Any) -> Callable[..., Coroutine[Any, Any, Any]] | None:
    fn = inspect.unwrap(actor.fn)
    return fn if inspect.iscoroutinefunction(fn) else None


class BatchingWorkerThread(WorkerThread):
    """A worker thread keeping up to ``batch_size`` ``concurrent`` async jobs in flight (a sliding window)."""

    def __init__(self, *, batch_size: int, local: LocalJobs | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.local = local or LocalJobs()
        self.in_flight: dict[int, MessageProxy] = {}  # by id(): a redelivered copy may run beside the original
        self.finished: SimpleQueue[tuple[MessageProxy, asyncio.Future[Any]]] = SimpleQueue()

    def run(self) -> None:
        """Like :meth:`WorkerThread.run`; finishes in-flight jobs before stopping."""
        self.running = True
        self.broker.emit_after("worker_thread_boot", self)
        while self.running or self.in_flight:
            try:
                if self.paused and not self.in_flight:
                    self.paused_event.set()
                    time.sleep(self.timeout)
                    continue
                self._refill()
                self._collect()
            except TimeLimitExceeded:  # a thread-level limit can't target one of many jobs; each has its own
                self.logger.warning("time limit signal ignored by a batching worker thread")
        self.broker.emit_before("worker_thread_shutdown", self)

    def _refill(self) -> None:
        plain: list[MessageProxy] = []
        batch: list[tuple[MessageProxy, Any]] = []
        room = self.batch_size - len(self.in_flight)
        while self.running and not self.paused and len(batch) < room and len(plain) < PLAIN_BATCH:
            try:
                if self.in_flight or plain or batch:
                    item = self.work_queue.get_nowait()
                else:
                    item = self.work_queue.get(timeout=self.timeout)
            except Empty:
                break
            message = item.message
            self.local.hold(message)
            actor = self.broker.actors.get(message.actor_name)
            if actor is None or not actor.options.get("concurrent") or _coroutine_function(actor) is None:
                plain.append(message)
            else:
                batch.append((message, actor))
        if batch:
            self._start_many(batch)
        if plain:
            self._process_plain(plain)

    def _process_plain(self, messages: list[MessageProxy]) -> None:
        """Run ordinary jobs one after another, with their delivery marks written together.

        A job marked alongside others that are still waiting their turn could, if one of them killed the
        worker, be counted as a death it took no part in. So jobs with an earlier death on record (count
        > 1) are unmarked and then run one at a time with marks of their own: a job reaches the poison
        limit only through deaths while it itself was running (or beside it on another thread).
        """
        group_commit = getattr(self.broker, "group_commit", None)
        if group_commit is None or len(messages) == 1:
            for message in messages:
                self.process_message(message)
            return
        counts = group_commit.mark_many([m.message_id for m in messages])
        suspects = []
        for message, count in zip(messages, counts, strict=True):
            if count > 1:
                suspects.append(message)
            else:
                message.__dict__["zq_deliveries"] = count
        for message in messages:
            if count_of(message) is not None:
                self.process_message(message)
        if suspects:
            group_commit.mark_many([m.message_id for m in suspects], delta=-1)
            for message in suspects:
                self.process_message(message)  # the poison guard marks it alone

    def process_message(self, message: MessageProxy) -> None:
        """Dramatiq's processing of one ordinary job; the job stops being held once it was acked or nacked."""
        try:
            super().process_message(message)
        finally:
            self.local.release(message)

    def _start_many(self, batch: list[tuple[MessageProxy, Any]]) -> None:
        """Mark the deliveries of ``batch`` in one round trip, run their before hooks here, then hand all
        their coroutines to the event loop in one call.

        They all run together, so a worker death while they are in flight is rightly counted against each.
        """
        group_commit = getattr(self.broker, "group_commit", None)
        if group_commit is not None and len(batch) > 1:
            try:
                counts = group_commit.mark_many([message.message_id for message, _ in batch])
            except Exception:  # Redis unavailable: each job's own mark (poison guard) reports it
                counts = []
            for (message, _), count in zip(batch, counts, strict=False):
                message.__dict__["zq_deliveries"] = count
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware must run before AsyncBatching"
        jobs = [job for message, actor in batch if (job := self._prepare(message, actor)) is not None]
        if jobs:
            loop_thread.loop.call_soon_threadsafe(self._launch, jobs)

    def _prepare(self, message: MessageProxy, actor: Any) -> tuple[MessageProxy, Coroutine[Any, Any, Any]] | None:
        """Run the before hooks of one job; its coroutine, or ``None`` when it already ended (skipped)."""
        try:
            self.broker.emit_before("process_message", message)
            if message.failed:
                self._finish(message, result=None)
                return None
            fn = _coroutine_function(actor)
            assert fn is not None
            limit_ms = message.options.get("time_limit") or actor.options.get("time_limit") or DEFAULT_TIME_LIMIT_MS
            self.in_flight[id(message)] = message
            return message, _run_one(message, fn(*message.args, **message.kwargs), limit_ms / 1000)
        except SkipMessage:
            self.broker.emit_after("skip_message", message)
            self._done(message)
        except BaseException as exc:
            self._finish(message, exception=exc)
        return None

    def _launch(self, jobs: list[tuple[MessageProxy, Coroutine[Any, Any, Any]]]) -> None:
        """On the event loop: start one task per job; each reports to this thread when it ends."""
        loop = asyncio.get_running_loop()
        for message, coroutine in jobs:
            loop.create_task(coroutine).add_done_callback(functools.partial(self._ended, message))

    def _ended(self, message: MessageProxy, task: asyncio.Future[Any]) -> None:
        self.finished.put((message, task))

    def _collect(self) -> None:
        if not self.in_flight:
            return
        # Completed futures arrive on a queue: O(1) per job, not a wait() over the whole window each time.
        try:
            done = [self.finished.get(timeout=self.timeout)]
        except Empty:
            return
        while True:
            try:
                done.append(self.finished.get_nowait())
            except Empty:
                break
        for message, future in done:
            self.in_flight.pop(id(message), None)
            try:
                exception = future.exception()
            except asyncio.CancelledError as cancelled:  # cancelled under it: a failed attempt, not a crash
                exception = cancelled
            if exception is None:
                self._finish(message, result=future.result())
            else:
                self._finish(message, exception=exception)

    def _finish(self, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None) -> None:
        try:
            if exception is None:
                self.broker.emit_after("process_message", message, result=result)
            else:
                message.stuff_exception(exception)
                if not isinstance(exception, Defer | Retry | RateLimitExceeded):
                    self.logger.error(
                        "Failed to process message %s with unhandled exception.",
                        message,
                        exc_info=(type(exception), exception, exception.__traceback__),
                    )
                self.broker.emit_after("process_message", message, exception=exception)
        except BaseException:
            self.logger.exception("after_process_message failed for %s", message)
        finally:
            self._done(message)

    def _done(self, message: MessageProxy) -> None:
        try:
            self.consumers[message.queue_name].post_process_message(message)
        finally:
            self.local.release(message)
            self.work_queue.task_done()
            message.clear_exception()


async def _run_one(message: MessageProxy, coroutine: Coroutine[Any, Any, Any], limit_s: float) -> Any:
    CurrentMessage._MESSAGE.set(message)  # type: ignore[arg-type]  # each task has its own context: the actor sees its own message
    limit = asyncio.timeout(limit_s)  # no extra task per job, unlike wait_for
    try:
        async with limit:
            return await coroutine
    except TimeoutError:
        if not limit.expired():
            raise  # the job's own timeout, not its time limit
        raise TimeLimitExceeded(f"job exceeded its time limit of {limit_s:.0f} s") from None


def _runs_concurrent_actors(broker: Broker, worker: Worker) -> bool:
    """True when ``worker`` consumes the queue of at least one ``concurrent=True`` actor."""
    whitelist = worker.consumer_whitelist
    return any(
        actor.options.get("concurrent") and (not whitelist or actor.queue_name in whitelist)
        for actor in broker.actors.values()
    )


class UvloopAsyncIO(AsyncIO):
    """Dramatiq's ``AsyncIO`` middleware with a uvloop event loop.

    Every provider call, claim and record of the sender runs on this loop; uvloop's socket and callback
    handling costs a fraction of the pure-Python selector loop's. The global event-loop policy is left alone.
    """

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Start the event loop thread on a uvloop loop."""
        import uvloop

        thread = EventLoopThread(self.logger)
        thread.loop.close()
        thread.loop = uvloop.new_event_loop()
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)


class AsyncBatching(Middleware):
    """Make the worker's threads :class:`BatchingWorkerThread` and size prefetch for them."""

    actor_options = {"concurrent"}

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.batch_size = batch_size

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Swap the worker's thread factory before it starts its threads and consumers."""
        batch_size = self.batch_size
        local = worker.zq_local = LocalJobs()  # type: ignore[attr-defined]  # read by dead-worker recovery
        # Each thread may hold a whole batch in flight: prefetch enough to keep them all busy. Only a worker
        # that runs concurrent actors needs it: in any other, a SIGKILL would strand that many prefetched jobs
        # until dead-worker recovery (and the first worker up would take 1,000+ jobs from the others).
        if _runs_concurrent_actors(broker, worker):
            worker.queue_prefetch = max(worker.queue_prefetch, worker.worker_threads * batch_size * 2)

        def add_worker() -> None:
            thread = BatchingWorkerThread(
                batch_size=batch_size,
                local=local,
                broker=worker.broker,
                consumers=worker.consumers,
                work_queue=worker.work_queue,
                worker_timeout=worker.worker_timeout,
            )
            thread.start()
            worker.workers.append(thread)

        worker._add_worker = add_worker  # type: ignore[method-assign]
