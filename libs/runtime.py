"""Per-process resources (database, HTTP clients) opened in start hooks and closed in stop hooks."""

from __future__ import annotations

import threading
from typing import Any

from dramatiq import Broker, Middleware

from libs.db.engine import Database
from libs.settings import Settings


class Resources(Middleware):
    """What a worker process's actors need, created on first use and closed at worker shutdown.

    Registered as broker middleware by each service so that shutdown closes what boot opened.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The process's database handle."""
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = Database.from_settings(self.settings)
        return self._db

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Open the database pool before the first job."""
        self.db  # noqa: B018 - opening the pool early surfaces bad settings at boot

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Close pools."""
        self.close()

    def close(self) -> None:
        """Close everything this process opened."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def install_resources(broker: Broker, settings: Settings) -> Resources:
    """The broker's :class:`Resources`, added once per process however many services share the broker."""
    for middleware in broker.middleware:
        if isinstance(middleware, Resources):
            return middleware
    resources = Resources(settings)
    broker.add_middleware(resources)
    return resources
