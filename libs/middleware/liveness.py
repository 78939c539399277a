"""Worker liveness for container probes: progress, not just threads that exist.

A worker whose threads are all alive can still be stuck — every thread waiting on Redis, on a lock, on a
provider that never answers. So the heartbeat file (:mod:`libs.heartbeat`, read by :mod:`libs.ops.probe`) reports
a problem when a thread died, or when the process holds jobs (fetched into its work queue or running) yet has
finished none (acked or nacked) for ``stall_seconds``. The probe fails while that lasts and passes again with the
next finished job.

By default ``stall_seconds`` is the longest time limit of the actors the worker runs plus
``DEFAULT_STALL_GRACE_S``: a single long job within its limit never looks stuck.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import TimeLimit

from libs import dramatiq_ext
from libs.heartbeat import remove, start_heartbeat

#: Seconds between two heartbeats (shortened to a third of the stall limit when that is shorter).
DEFAULT_INTERVAL_S = 5.0
#: Added to the longest actor time limit to give the default stall limit.
DEFAULT_STALL_GRACE_S = 60.0
#: Dramatiq's own default time limit, for actors that declare none when no ``TimeLimit`` middleware says.
FALLBACK_TIME_LIMIT_MS = 600_000


class Liveness(Middleware):
    """Write ``<directory>/zapq-worker-<pid>.alive`` every ``interval`` s with the worker's health."""

    def __init__(
        self, *, directory: str, interval: float = DEFAULT_INTERVAL_S, stall_seconds: float | None = None
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.stall_seconds = stall_seconds
        self._progress = time.monotonic()

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start the heartbeat thread once the worker's threads exist."""
        stall = self.stall_seconds or longest_time_limit_s(broker, worker) + DEFAULT_STALL_GRACE_S
        self._progress = time.monotonic()
        start_heartbeat(
            self.directory,
            "worker",
            interval=min(self.interval, stall / 3),
            problem=lambda: self.problem(worker, stall),
        )

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """The worker stopped cleanly: its heartbeat goes with it (the probe then counts only live ones)."""
        remove(self.directory, "worker")

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        """A job was finished: progress."""
        self._progress = time.monotonic()

    after_nack = after_ack

    def problem(self, worker: Any, stall_seconds: float, now: float | None = None) -> str | None:
        """What is wrong with ``worker`` now (``None``: healthy)."""
        now = time.monotonic() if now is None else now
        threads = dramatiq_ext.threads(worker)
        dead = sum(1 for thread in threads if not thread.is_alive())
        if not threads or dead:
            return f"{dead} of {len(threads)} worker thread(s) died"
        holding = dramatiq_ext.jobs_held(worker)
        if not holding:
            self._progress = now  # idle is not stuck
            return None
        silent = now - self._progress
        if silent > stall_seconds:
            return f"holds {holding} job(s) and finished none for {silent:.0f} s (limit {stall_seconds:.0f} s)"
        return None


def longest_time_limit_s(broker: Broker, worker: Any) -> float:
    """The longest time limit (s) of the actors whose queues ``worker`` consumes."""
    default_ms = next((m.time_limit for m in broker.middleware if isinstance(m, TimeLimit)), FALLBACK_TIME_LIMIT_MS)
    whitelist = dramatiq_ext.consumed_queues(worker)
    limits = [
        actor.options.get("time_limit") or default_ms
        for actor in broker.actors.values()
        if not whitelist or actor.queue_name in whitelist
    ]
    return max(limits, default=default_ms) / 1000
