"""Every use of Dramatiq's internals, fenced in one package (``dramatiq==2.2.1``, pinned in ``pyproject.toml``).

zapq needs more of Dramatiq than its documented API offers: a consumer that refills its window on acks and acks
through a group commit, worker threads that keep many async jobs in flight, prompt dead-worker recovery, the
broker's heartbeats on Redis's clock. Each internal it relies on is used here and nowhere else, and
``tests/test_dramatiq_ext.py`` pins each one — so a Dramatiq upgrade fails that one test file, naming what moved,
instead of a worker in production:

* :mod:`libs.dramatiq_ext.redis` — ``_RedisConsumer`` (subclassed, fetch loop rewritten), ``consumer_class``,
  ``_scripts["dispatch"]`` (patched to Redis's clock) and its ARGV layout, ``scripts``, ``_max_unpack_size``,
  ``do_fetch`` / ``do_requeue``, ``broker_id``;
* :mod:`libs.dramatiq_ext.worker` — ``Worker._add_worker``, ``consumers``, ``workers``, ``work_queue``,
  ``consumer_whitelist``, ``queue_prefetch``, ``worker_threads``, ``worker_timeout``; ``WorkerThread``'s run-loop
  state; ``ConsumerThread.consumer`` / ``delay_queue`` / ``post_process_message``; the consumer's
  ``message_cache``; a ``MessageProxy``'s ``__dict__``; ``CurrentMessage._MESSAGE``; ``EventLoopThread.loop``;
* :func:`q_name` / :func:`dq_name` (``dramatiq.common``).

Everywhere else, zapq imports from Dramatiq only what its modules export (``dramatiq``, ``dramatiq.middleware``,
``dramatiq.errors``, ``dramatiq.asyncio``, ``dramatiq.message``, ``dramatiq.encoder``, ``dramatiq.broker``'s
``Broker`` / ``MessageProxy``, ``RedisBroker``) and uses their documented attributes; a test checks it.
"""

from __future__ import annotations

from dramatiq.common import dq_name, q_name

from libs.dramatiq_ext.redis import (
    CLOSE_FLUSH_S,
    DISPATCH,
    FULL_WINDOW_WAIT_S,
    MIN_PREFETCH,
    RedisBrokerBase,
    ZapqRedisConsumer,
    maintain,
    requeue,
    worker_id,
)
from libs.dramatiq_ext.worker import (
    WorkerThreadBase,
    consumed_queues,
    fetched_ids,
    install_thread_factory,
    jobs_held,
    message_of,
    note,
    noted,
    raise_prefetch,
    set_current_message,
    start_event_loop_thread,
    take_prefetched,
    thread_count,
    threads,
)

__all__ = [
    "CLOSE_FLUSH_S",
    "DISPATCH",
    "FULL_WINDOW_WAIT_S",
    "MIN_PREFETCH",
    "RedisBrokerBase",
    "WorkerThreadBase",
    "ZapqRedisConsumer",
    "consumed_queues",
    "dq_name",
    "fetched_ids",
    "install_thread_factory",
    "jobs_held",
    "maintain",
    "message_of",
    "note",
    "noted",
    "q_name",
    "raise_prefetch",
    "requeue",
    "set_current_message",
    "start_event_loop_thread",
    "take_prefetched",
    "thread_count",
    "threads",
    "worker_id",
]
