"""Dramatiq's worker internals zapq builds on: its thread factory, its work queue, its consumer threads.

* :func:`install_thread_factory` replaces the private ``Worker._add_worker`` (called once per worker thread by
  ``Worker.start`` after the ``before_worker_boot`` hooks), building threads with ``WorkerThread``'s keyword
  arguments from the worker's ``broker``, ``consumers``, ``work_queue`` and ``worker_timeout`` and appending them
  to ``workers``.
* :class:`WorkerThreadBase` names the operations of a ``WorkerThread`` subclass that runs jobs its own way over
  the thread's undocumented state: its ``work_queue`` (a ``PriorityQueue`` of items with a ``message``), the
  consumer threads' ``post_process_message`` (ack or nack), ``paused_event``; it relies on the inherited
  ``broker``, ``running``, ``paused``, ``timeout`` and ``logger`` attributes and ``process_message``.
* The worker's ``consumers`` (consumer threads with a ``consumer`` holding a ``message_cache`` and a
  ``delay_queue``), ``workers``, ``consumer_whitelist``, ``queue_prefetch`` and ``worker_threads`` are read by
  :func:`fetched_ids`, :func:`take_prefetched`, :func:`threads`, :func:`jobs_held`, :func:`consumed_queues`,
  :func:`raise_prefetch`, :func:`thread_count`.
* Notes on a ``MessageProxy`` are kept in its ``__dict__`` (:func:`note`, :func:`noted`), the current message of
  an asyncio task is set in ``CurrentMessage._MESSAGE`` (:func:`set_current_message`), and
  :func:`start_event_loop_thread` gives an ``EventLoopThread`` another event loop before it starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from queue import Empty, Queue
from typing import Any

from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage
from dramatiq.worker import WorkerThread


class WorkerThreadBase(WorkerThread):
    """Dramatiq's ``WorkerThread`` with its work queue and post-processing behind named operations."""

    def take(self, *, wait: bool) -> Any | None:
        """The next work-queue item (waiting up to the thread's timeout when ``wait``); ``None`` when none."""
        try:
            return self.work_queue.get(timeout=self.timeout) if wait else self.work_queue.get_nowait()
        except Empty:
            return None

    def put_back(self, item: Any) -> None:
        """Return a taken item to the work queue (follow with :meth:`item_done`)."""
        self.work_queue.put(item)

    def item_done(self) -> None:
        """One taken item is finished with (Dramatiq's worker joins on these)."""
        self.work_queue.task_done()

    def post_process(self, message: MessageProxy) -> None:
        """Ack the message, or nack it when it failed, through its consumer (retrying while Redis is down)."""
        self.consumers[message.queue_name].post_process_message(message)

    def wait_paused(self) -> None:
        """Signal that this thread is paused and sleep one timeout."""
        self.paused_event.set()
        time.sleep(self.timeout)


def message_of(item: Any) -> MessageProxy:
    """The message of a work-queue item."""
    message: MessageProxy = item.message
    return message


def install_thread_factory(worker: Any, build: Callable[..., WorkerThread]) -> None:
    """Make ``worker`` start its threads with ``build(broker=, consumers=, work_queue=, worker_timeout=)``.

    Call it from a ``before_worker_boot`` hook: the worker starts its threads right after those hooks.
    """

    def add_worker() -> None:
        thread = build(
            broker=worker.broker,
            consumers=worker.consumers,
            work_queue=worker.work_queue,
            worker_timeout=worker.worker_timeout,
        )
        thread.start()
        worker.workers.append(thread)

    worker._add_worker = add_worker


def thread_count(worker: Any) -> int:
    """How many worker threads ``worker`` runs."""
    return int(worker.worker_threads)


def raise_prefetch(worker: Any, at_least: int) -> None:
    """Make each consumer of ``worker`` prefetch at least ``at_least`` messages (before its consumers start)."""
    worker.queue_prefetch = max(worker.queue_prefetch, at_least)


def consumed_queues(worker: Any) -> set[str] | None:
    """The queues ``worker`` was told to consume (``-Q``), or ``None``: every declared queue."""
    whitelist = getattr(worker, "consumer_whitelist", None)
    return set(whitelist) if whitelist else None


def threads(worker: Any) -> list[Any]:
    """Every consumer and worker thread of ``worker``."""
    return [*worker.consumers.values(), *worker.workers]


def jobs_held(worker: Any) -> int:
    """Jobs fetched into ``worker``'s work queue or running, not finished yet."""
    return int(worker.work_queue.unfinished_tasks)


def fetched_ids(worker: Any) -> set[str]:
    """Redis ids of the messages ``worker`` holds in Dramatiq's own hands: prefetched by a consumer, waiting in a
    consumer's delay queue, queued in the work queue (read in that order, the order a message moves in)."""
    held: set[str] = set()
    for thread in list(worker.consumers.values()):
        for data in list(getattr(thread.consumer, "message_cache", None) or ()):
            if data is not None:
                held.add(Message.decode(data).options.get("redis_message_id", ""))
        held |= _queued_ids(thread.delay_queue)
    held |= _queued_ids(worker.work_queue)
    return held


def _queued_ids(work: Queue[Any]) -> set[str]:
    with work.mutex:
        items = list(work.queue)
    return {item.message.options.get("redis_message_id", "") for item in items}


def take_prefetched(thread: Any) -> tuple[Any, list[Message[Any]]] | None:
    """A stopping consumer thread's consumer and what it fetched but never handed out (now taken from it)."""
    consumer = getattr(thread, "consumer", None)
    cache = getattr(consumer, "message_cache", None)
    if consumer is None or not cache:
        return None
    messages = [Message.decode(data) for data in cache if data is not None]
    consumer.message_cache = []
    return consumer, messages


def note(message: MessageProxy, name: str, value: Any) -> None:
    """Keep ``value`` on this delivery of ``message`` (not on the message itself, which is re-encoded)."""
    message.__dict__[name] = value


def noted(message: MessageProxy, name: str, default: Any = None) -> Any:
    """What :func:`note` kept on this delivery of ``message``, else ``default``."""
    return message.__dict__.get(name, default)


def set_current_message(message: MessageProxy) -> None:
    """Make ``message`` what ``CurrentMessage.get_current_message()`` returns in the running context (an asyncio
    task has its own)."""
    CurrentMessage._MESSAGE.set(message)  # type: ignore[arg-type]


def start_event_loop_thread(logger: logging.Logger, loop: asyncio.AbstractEventLoop) -> None:
    """Start Dramatiq's event loop thread (the one async actors run on) on ``loop`` and install it."""
    thread = EventLoopThread(logger)
    thread.loop.close()
    thread.loop = loop
    thread.start(timeout=1.0)
    set_event_loop_thread(thread)
