"""Test session wiring: its own Postgres database and Redis namespace, real workers, no sleeps.

The environment is set before any service module is imported (they read settings at import), so every
service in this process shares one broker bound to this session's namespace.
"""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

SESSION = uuid.uuid4().hex[:10]
os.environ.setdefault("ZAPQ_ENV", "test")
os.environ.setdefault("ZAPQ_GC_TUNING", "false")  # one process, many in-process workers: no heap freezing
os.environ["ZAPQ_REDIS_URL"] = os.environ.get("ZAPQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ["ZAPQ_REDIS_NAMESPACE"] = f"zapq-test-{SESSION}"
os.environ["ZAPQ_DATABASE_URL"] = (
    os.environ.get("ZAPQ_TEST_DATABASE_URL_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")
    + f"/zapq_test_{SESSION}"
)
os.environ.setdefault("ZAPQ_SENTRY_DSN", "")
os.environ["ZAPQ_MEDIA_DIR"] = f"/tmp/zapq-test-media-{SESSION}"
os.environ.setdefault("ZAPQ_TEST_CLOCK", "1")  # the messaging-limit budget's clock can be moved forward

SERVICE_MODULES = (
    "services.webhook_ingest",
    "services.message_sender",
    "services.campaign_runner",
    "services.scheduler",
    "services.event_dispatcher",
    "services.media_fetcher",
)

import dramatiq  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from libs.db.engine import Database  # noqa: E402
from libs.db.migrate import drop_database, upgrade  # noqa: E402
from libs.db.models import Base  # noqa: E402
from libs.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    """This session's settings (own database, own Redis namespace)."""
    return load_settings()


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Iterator[str]:
    """Create and migrate this session's database; drop it at the end."""
    upgrade(settings.sqlalchemy_url)
    yield settings.sqlalchemy_url
    drop_database(settings.sqlalchemy_url)
    shutil.rmtree(settings.media_dir, ignore_errors=True)  # this session's media files


@pytest.fixture(scope="session")
def session_db(migrated: str, settings: Settings) -> Iterator[Database]:
    """One engine for the whole session."""
    database = Database.from_url(migrated, pool_size=5)
    yield database
    database.close()


@pytest.fixture
def db(session_db: Database) -> Iterator[Database]:
    """The session database, emptied before each test."""
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with session_db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield session_db


def flush_namespace(client: redis.Redis, namespace: str) -> None:
    """Delete every key of ``namespace`` (and nothing else)."""
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture(scope="session")
def services(migrated: str) -> Any:
    """Import every service once: their actors all register on one shared broker."""
    for name in SERVICE_MODULES:
        importlib.import_module(name)
    return dramatiq.get_broker()


@pytest.fixture
def broker(services: Any, settings: Settings) -> Iterator[Any]:
    """The shared broker with this session's namespace flushed before and after the test."""
    flush_namespace(services.client, settings.redis_namespace)
    yield services
    flush_namespace(services.client, settings.redis_namespace)


@pytest.fixture
def worker(broker: Any) -> Iterator[dramatiq.Worker]:
    """A real Dramatiq worker on the shared broker, stopped after the test."""
    w = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4)
    w.start()
    yield w
    w.stop()
    # Dramatiq leaves the stopped worker's middleware on the broker; a queue declared later would get a
    # consumer for this dead worker that fetches messages nobody runs.
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not w]


@pytest.fixture(scope="session")
def test_actors(services: Any) -> dict[str, dramatiq.Actor[Any, Any]]:
    """The retry/dead-letter test actors (``tests.middleware.support``), declared once per session."""
    from tests.middleware.support import declare_test_actors

    return declare_test_actors(services)


@pytest.fixture
def probe(test_actors: dict[str, Any]) -> Iterator[Any]:
    """The probe the test actors report to, reset before and after the test."""
    from tests.middleware.support import PROBE

    PROBE.reset()
    yield PROBE
    PROBE.reset()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (``-n 2 --dist loadgroup``), the fault tests run one after another on one worker.

    Each starts several real processes and injects an outage on its own Redis, Postgres or proxy; two of them
    at once on a 2-core machine would starve each other's timing. The other tests spread over both workers.
    """
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(pytest.mark.xdist_group("faults"))
