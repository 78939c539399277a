"""Worker liveness for container probes: a heartbeat file touched while the worker's threads are alive."""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Middleware

from libs.ops.probe import start_heartbeat


class Liveness(Middleware):
    """Touch ``<directory>/zapq-worker-<pid>.alive`` every ``interval`` s while consumers and workers run."""

    def __init__(self, *, directory: str, interval: float = 5.0) -> None:
        self.directory = directory
        self.interval = interval

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start the heartbeat thread once the worker's threads exist."""

        def healthy() -> bool:
            threads = [*worker.consumers.values(), *worker.workers]
            return bool(threads) and all(thread.is_alive() for thread in threads)

        start_heartbeat(self.directory, "worker", interval=self.interval, healthy=healthy)
