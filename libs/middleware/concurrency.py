"""Many I/O-bound async jobs in flight per worker thread, with at-least-once delivery kept.

Dramatiq runs one job per worker thread, so a thread waiting 200 ms on a provider caps a process at
threads ÷ latency sends per second. For actors declared ``concurrent=True`` (``async def``), each worker
thread instead takes up to ``batch_size`` messages already fetched from the work queue, runs every
middleware ``before`` hook for them on the thread, runs their coroutines together on the AsyncIO event
loop, then runs the ``after`` hooks and acks each message on the same thread — so retry policies, dead
letters and the poison guard see exactly what they see for a plain job, and a message is acked only once
its coroutine has finished.

Non-concurrent actors on the same worker are processed one at a time as usual. Jobs delivered before without
finishing (a worker died while they were in flight) run alone in the process instead, so the poison guard
counts a death only against the job that was running (:mod:`libs.middleware.local_jobs`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from queue import Empty, SimpleQueue
from typing import Any

from dramatiq import Broker, Middleware, Worker
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.errors import RateLimitExceeded, Retry
from dramatiq.middleware import AsyncIO, SkipMessage, TimeLimitExceeded

from libs import dramatiq_ext
from libs.dramatiq_ext import WorkerThreadBase, message_of, note, noted
from libs.errors import Defer
from libs.middleware.local_jobs import LocalJobs
from libs.middleware.poison import DELIVERIES
from libs.redis_broker import REDIS_UNAVAILABLE

#: Jobs one worker thread keeps in flight.
DEFAULT_BATCH_SIZE = 64
#: Ordinary jobs one worker thread takes per refill: enough to share a delivery-mark round trip, few enough
#: that all threads share the consumer's window (at 64, two threads took a window of 128 and six waited).
PLAIN_BATCH = 16
#: Time limit of a concurrent job that declares none (ms), as for other actors.
DEFAULT_TIME_LIMIT_MS = 60_000
#: Pauses of a worker thread whose jobs' delivery marks Redis did not take (doubling from first to last).
FIRST_BROKER_PAUSE_S = 0.1
MAX_BROKER_PAUSE_S = 2.0
#: Noted on a delivery: it runs alone (a suspect), outside the count of fresh jobs.
ISOLATED = "zq_isolated"


def _concurrent_actor(broker: Broker, message: MessageProxy) -> Any | None:
    """The actor of ``message`` when it runs concurrently (``concurrent=True`` and ``async def``), else None."""
    actor = broker.actors.get(message.actor_name)
    if actor is None or not actor.options.get("concurrent") or _coroutine_function(actor) is None:
        return None
    return actor


def _coroutine_function(actor: Any) -> Callable[..., Coroutine[Any, Any, Any]] | None:
    fn = inspect.unwrap(actor.fn)
    return fn if inspect.iscoroutinefunction(fn) else None


class BatchingWorkerThread(WorkerThreadBase):
    """A worker thread keeping up to ``batch_size`` ``concurrent`` async jobs in flight (a sliding window).

    Each refill takes what the work queue holds (up to the window, and at most ``PLAIN_BATCH`` ordinary
    jobs), writes their delivery marks in one round trip and sets aside the *suspects* among them — jobs
    delivered before without finishing — which :class:`~libs.middleware.local_jobs.LocalJobs` runs alone.
    """

    def __init__(self, *, batch_size: int, local: LocalJobs | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.local = local or LocalJobs()
        self._broker_pause = FIRST_BROKER_PAUSE_S
        self.in_flight: dict[int, MessageProxy] = {}  # by id(): a redelivered copy may run beside the original
        self.finished: SimpleQueue[tuple[MessageProxy, asyncio.Future[Any]]] = SimpleQueue()

    def run(self) -> None:
        """Like :meth:`WorkerThread.run`; finishes in-flight jobs before stopping."""
        self.running = True
        self.broker.emit_after("worker_thread_boot", self)
        while self.running or self.in_flight:
            try:
                if self.paused and not self.in_flight:
                    self.wait_paused()
                    continue
                if self.local.blocked():  # a suspect waits to run alone: take nothing new, finish what runs
                    if self.in_flight:
                        self._collect()
                    elif self.running and (item := self.local.claim(self.timeout)) is not None:
                        self._run_alone(item)
                    continue
                self._refill()
                self._collect()
            except TimeLimitExceeded:  # a thread-level limit can't target one of many jobs; each has its own
                self.logger.warning("time limit signal ignored by a batching worker thread")
            except Exception:  # a worker thread lost is capacity lost for good: log, pause, go on
                self.logger.exception("worker thread error; going on")
                self._pause_for_broker()
        for item in self.local.take_suspects():  # stopping: the worker requeues what its work queue holds
            self.put_back(item)
            self.local.release(message_of(item))
            self.item_done()
        self.broker.emit_before("worker_thread_shutdown", self)

    def _refill(self) -> None:
        if not self.local.admit():
            return
        items: list[Any] = []
        plain = 0
        room = self.batch_size - len(self.in_flight)
        try:
            while self.running and not self.paused and len(items) - plain < room and plain < PLAIN_BATCH:
                item = self.take(wait=not (self.in_flight or items))
                if item is None:
                    break
                message = message_of(item)
                self.local.hold(message)
                items.append(item)
                plain += _concurrent_actor(self.broker, message) is None
            fresh = self._mark_fresh(items)
        except REDIS_UNAVAILABLE as exc:
            # Nothing started: the jobs go back to the work queue (still held by this process) and run once
            # Redis takes their marks again. This thread waits a little before it tries again.
            self._give_back(items)
            self.local.settle(0)
            self.logger.warning("cannot mark %d job(s) as started (%s); retrying", len(items), type(exc).__name__)
            self._pause_for_broker()
            return
        except BaseException:
            self._give_back(items)
            self.local.settle(0)
            raise
        self._broker_pause = FIRST_BROKER_PAUSE_S
        self.local.settle(len(fresh))
        self._start([message for message in fresh if _concurrent_actor(self.broker, message) is not None])
        for message in fresh:
            if _concurrent_actor(self.broker, message) is None:
                self.process_message(message)

    def _mark_fresh(self, items: list[Any]) -> list[MessageProxy]:
        """Write the delivery marks of ``items`` (one round trip); the fresh ones, the suspects set aside."""
        group_commit = getattr(self.broker, "group_commit", None)
        if group_commit is None or not items:  # no shared counters: the poison guard counts each job itself
            return [message_of(item) for item in items]
        counts = group_commit.claim_deliveries([message_of(item).message_id for item in items])
        fresh = []
        for item, count in zip(items, counts, strict=True):
            if count > 0:
                message = message_of(item)
                note(message, DELIVERIES, count)
                fresh.append(message)
            else:
                self.local.suspect(item)
        return fresh

    def _give_back(self, items: list[Any]) -> None:
        """Return taken, unstarted jobs to the work queue (put first: the process holds them throughout)."""
        for item in items:
            self.put_back(item)
            self.local.release(message_of(item))
            self.item_done()

    def _pause_for_broker(self) -> None:
        """Wait before trying Redis again: doubling from ``FIRST_BROKER_PAUSE_S`` to ``MAX_BROKER_PAUSE_S``."""
        pause, self._broker_pause = self._broker_pause, min(MAX_BROKER_PAUSE_S, self._broker_pause * 2)
        time.sleep(pause)

    def _run_alone(self, item: Any) -> None:
        """Run one suspect while nothing else runs in the process; only this run counts as a delivery."""
        message = message_of(item)
        note(message, ISOLATED, True)
        try:
            group_commit = self.broker.group_commit  # type: ignore[attr-defined]  # suspects need one
            try:
                [deliveries] = group_commit.mark_many([message.message_id])
                note(message, DELIVERIES, deliveries)
            except REDIS_UNAVAILABLE:
                self.local.suspect(item, first=True)  # its turn again once Redis takes the mark
                self._pause_for_broker()
                return
            self._broker_pause = FIRST_BROKER_PAUSE_S
            if _concurrent_actor(self.broker, message) is None:
                self.process_message(message)
            else:
                self._start([message])
                while self.in_flight:
                    self._collect()
        finally:
            self.local.end_isolation()

    def process_message(self, message: MessageProxy) -> None:
        """Dramatiq's processing of one ordinary job; the job stops being held once it was acked or nacked."""
        try:
            super().process_message(message)
        finally:
            self._released(message)

    def _start(self, messages: list[MessageProxy]) -> None:
        """Run the before hooks of ``messages`` here, then hand all their coroutines to the event loop at once."""
        if not messages:
            return
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware must run before AsyncBatching"
        jobs = [
            job
            for message in messages
            if (job := self._prepare(message, self.broker.actors[message.actor_name])) is not None
        ]
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
            self.post_process(message)
        finally:
            self._released(message)
            self.item_done()
            message.clear_exception()

    def _released(self, message: MessageProxy) -> None:
        self.local.release(message)
        if not noted(message, ISOLATED):
            self.local.fresh_done()


async def _run_one(message: MessageProxy, coroutine: Coroutine[Any, Any, Any], limit_s: float) -> Any:
    dramatiq_ext.set_current_message(message)  # each task has its own context: the actor sees its own message
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
    whitelist = dramatiq_ext.consumed_queues(worker)
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

        dramatiq_ext.start_event_loop_thread(self.logger, uvloop.new_event_loop())


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
            dramatiq_ext.raise_prefetch(worker, dramatiq_ext.thread_count(worker) * batch_size * 2)
        dramatiq_ext.install_thread_factory(
            worker, functools.partial(BatchingWorkerThread, batch_size=batch_size, local=local)
        )
