"""One benchmark run's private world: a Postgres database, a Redis namespace, child processes, cleanup.

:meth:`BenchRun.open` creates ``zapq_bench_<token>`` (migrated with ``libs.db.migrate.upgrade``) and the
namespace ``zapq-bench-<token>``; on exit — normal, exception or Ctrl-C — it stops every process it started,
deletes every Redis key under ``zapq-bench-<token>*`` and drops the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from libs.db.migrate import drop_database, upgrade
from libs.ops.processes import ProcessGroup, free_port, wait_http
from libs.settings import Settings, load_settings

POSTGRES_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Poll period of every "wait until" loop: short enough not to blur a multi-second figure.
POLL_S = 0.05
#: How long children get to stop after SIGTERM before they are killed.
STOP_GRACE_S = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = POLL_S) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class BenchRun:
    """Names and handles of one run; build it with :meth:`open`."""

    quick: bool
    token: str
    database_url: str
    namespace: str
    log_dir: Path
    redis: redis.Redis
    groups: list[ProcessGroup] = field(default_factory=list)
    stoppers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def open(cls, *, quick: bool) -> Iterator[BenchRun]:
        """Create the run's database and namespace; tear everything down on exit."""
        token = secrets.token_hex(4)
        run = cls(
            quick=quick,
            token=token,
            database_url=f"{POSTGRES_BASE}/zapq_bench_{token}",
            namespace=f"zapq-bench-{token}",
            log_dir=Path(tempfile.mkdtemp(prefix=f"zapq-bench-{token}-")),
            redis=redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=30),
        )
        try:
            upgrade(run.database_url)
            yield run
        finally:
            run.close()

    def close(self) -> None:
        """Stop every child, flush the namespace, drop the database (each step runs even if one fails)."""
        for group in list(self.groups):
            with contextlib.suppress(Exception):
                group.stop(grace=STOP_GRACE_S)
        self.groups.clear()
        self.join_stoppers()
        with contextlib.suppress(Exception):
            self.flush()
        with contextlib.suppress(Exception):
            drop_database(self.database_url)
        with contextlib.suppress(Exception):
            self.redis.close()

    def scoped(self, name: str) -> BenchRun:
        """This run with a namespace of its own for scenario ``name`` (same database, children and cleanup)."""
        return dataclasses.replace(self, namespace=f"{self.namespace}-{name}")

    # ---- naming -----------------------------------------------------------------------------------------

    def sub_namespace(self, suffix: str) -> str:
        """Another namespace of this run (flushed with it), e.g. for a bare-Dramatiq baseline."""
        return f"{self.namespace}-{suffix}"

    @property
    def libpq_url(self) -> str:
        """The database URL for psycopg."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of every child: this run's database and namespace, dev secrets, no Sentry."""
        return {
            "ZAPQ_ENV": "dev",
            "ZAPQ_DATABASE_URL": self.database_url,
            "ZAPQ_REDIS_URL": REDIS_URL,
            "ZAPQ_REDIS_NAMESPACE": self.namespace,
            "ZAPQ_SENTRY_DSN": "",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def settings(self, **overrides: object) -> Settings:
        """The settings children see (for code that runs in the bench process)."""
        values: dict[str, object] = {
            "env": "dev",
            "database_url": self.database_url,
            "redis_url": REDIS_URL,
            "redis_namespace": self.namespace,
        }
        return load_settings(**{**values, **overrides})

    # ---- processes --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def processes(self, **env: str) -> Iterator[ProcessGroup]:
        """A process group with this run's environment, stopped on exit.

        Stopping runs in a background thread so that the next step can start meanwhile; :meth:`close` waits
        for every stop.
        """
        group = ProcessGroup(env=self.env(**env), log_dir=self.log_dir)
        self.groups.append(group)
        try:
            yield group
        finally:
            for _, process in group.children:  # signal now, wait in the background
                terminate(process)
            stopper = threading.Thread(target=self._stop, args=(group,), name="bench-stop", daemon=True)
            stopper.start()
            self.stoppers.append(stopper)

    def _stop(self, group: ProcessGroup) -> None:
        with contextlib.suppress(Exception):
            group.stop(grace=STOP_GRACE_S)
        with contextlib.suppress(ValueError):
            self.groups.remove(group)

    def join_stoppers(self) -> None:
        """Wait until every process group being stopped has stopped."""
        for stopper in list(self.stoppers):
            stopper.join(timeout=30)
        self.stoppers.clear()

    def start_server(
        self, group: ProcessGroup, name: str, argv: list[str], health_path: str
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """Start an HTTP server child on a free port (``{port}`` in ``argv``); its base URL once healthy."""
        port = free_port()
        process = group.start(name, [arg.replace("{port}", str(port)) for arg in argv])
        base = f"http://127.0.0.1:{port}"
        wait_http(base + health_path, timeout=30, process=process)
        return base, process

    def wait_workers(self, namespace: str, count: int, since_ms: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` Dramatiq worker processes heartbeat in ``namespace`` after ``since_ms``.

        Every broker command a worker process runs (its first fetch included) refreshes its heartbeat, so
        this is true once every process has booted and started consuming.
        """
        key = f"{namespace}:__heartbeats__"
        return wait_until(lambda: cast(int, self.redis.zcount(key, since_ms, "+inf")) >= count, timeout)

    def llen(self, key: str) -> int:
        """Length of a Redis list (typed: redis-py's sync/async union return types defeat mypy)."""
        return cast(int, self.redis.llen(key))

    def hlen(self, key: str) -> int:
        """Number of fields of a Redis hash."""
        return cast(int, self.redis.hlen(key))

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a child's log (for error messages)."""
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- state ------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Delete every key of this run's namespaces; returns how many."""
        keys = list(self.redis.scan_iter(match=f"{self.namespace}*", count=5000))
        for start in range(0, len(keys), 5000):
            self.redis.delete(*keys[start : start + 5000])
        return len(keys)

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit connection to this run's database."""
        return psycopg.connect(self.libpq_url, autocommit=True, connect_timeout=5)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child itself, not its process group (a Dramatiq or uvicorn master relays it to its
    workers; a Dramatiq worker that receives a second TERM exits at once instead of finishing its jobs)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)


def now_ms() -> int:
    """Wall-clock milliseconds (the clock Dramatiq stamps heartbeats with)."""
    return int(time.time() * 1000)
