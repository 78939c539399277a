"""Fixtures: one fake Sentry for the session, and the real SDK initialised by ``init_sentry`` per test.

Every test that initialises the SDK closes the client afterwards and puts the non-recording client back
on the global scope, so no client (nor the Dramatiq integration's middleware) leaks into other tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from sentry_sdk.integrations.dramatiq import SentryMiddleware

from libs.observability import init_sentry, setup_logging
from libs.settings import Settings
from tests.fakes.sentry import SentryRecorder, running_sentry
from tests.observability.support import SERVICE, reset_sentry


@pytest.fixture(scope="session")
def sentry_server() -> Iterator[tuple[str, SentryRecorder]]:
    """One fake Sentry on 127.0.0.1 for the session: ``(dsn, recorder)``."""
    with running_sentry() as server:
        yield server


@pytest.fixture
def sentry(sentry_server: tuple[str, SentryRecorder], settings: Settings) -> Iterator[SentryRecorder]:
    """The SDK initialised by ``init_sentry`` against the fake (emptied first); closed after the test."""
    dsn, recorder = sentry_server
    recorder.clear()
    assert init_sentry(settings.model_copy(update={"sentry_dsn": dsn}), service=SERVICE)
    try:
        yield recorder
    finally:
        reset_sentry()


@pytest.fixture
def sentry_broker(sentry: SentryRecorder, broker: Any) -> Iterator[Any]:
    """The shared broker with the Dramatiq integration's middleware first, as ``init_sentry`` before
    ``setup_broker`` gives it in a service (the session broker was built before any test initialised Sentry).
    """
    middleware = SentryMiddleware()
    broker.middleware.insert(0, middleware)
    try:
        yield broker
    finally:
        broker.middleware.remove(middleware)


@pytest.fixture
def sentry_worker(sentry_broker: Any, worker: dramatiq.Worker) -> dramatiq.Worker:
    """A real worker started after Sentry was initialised (its threads inherit the SDK's scopes)."""
    return worker


@pytest.fixture
def log_output() -> Iterator[list[str]]:
    """Formatted root-logger output (exceptions included), with ``setup_logging``'s filter on the handler.

    Root level and handler filters are put back afterwards.
    """
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    level = root.level
    filters = {handler: list(handler.filters) for handler in root.handlers}
    handler = ListHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    setup_logging("INFO")
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        for other, kept in filters.items():
            other.filters[:] = kept
        root.setLevel(level)
