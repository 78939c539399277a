"""Per-process resources (database, HTTP clients) opened in start hooks and closed in stop hooks, and the
garbage collector's tuning every zapq process gets once it has booted (:func:`tune_gc`)."""

from __future__ import annotations

import gc
import threading
from typing import Any

from dramatiq import Broker, Middleware

from libs.db.engine import Database
from libs.settings import Settings

#: Allocations between two young-generation collections (CPython's default: 700). A request or a job allocates
#: hundreds of short-lived objects, so the default collects several times per burst, and each collection that
#: reaches the old generation walks the whole heap: in a sender, garbage collection was ~20 % of its CPU
#: (``gc.callbacks`` timing in ``python -m bench tracing``). With the start-up heap frozen, this threshold took
#: the edge's accept p99 from ~55 to ~25 ms in ``just bench ingest``.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Once a process has booted: freeze the start-up heap out of collection (modules, settings, pools — never
    garbage), and collect the young generation every ``GC_YOUNG_THRESHOLD`` allocations."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


class GcTuning(Middleware):
    """Tune a worker process's garbage collector once its actors and pools are loaded (:func:`tune_gc`)."""

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Freeze what boot made, raise the young generation's threshold."""
        tune_gc()


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
