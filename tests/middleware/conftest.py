"""Fixtures for the middleware tests: test actors on the shared broker, a fresh probe, subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from tests.middleware.support import PROBE, Probe, Processes, declare_test_actors


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (subprocess tests that take several seconds)."""
    config.addinivalue_line("markers", "slow: real subprocesses / real waits of several seconds")


@pytest.fixture(scope="session")
def test_actors(services: Any) -> dict[str, dramatiq.Actor[Any, Any]]:
    """The test actors, declared once per session on the shared broker."""
    return declare_test_actors(services)


@pytest.fixture
def probe(test_actors: dict[str, Any]) -> Iterator[Probe]:
    """The probe the test actors report to, reset before and after the test."""
    PROBE.reset()
    yield PROBE
    PROBE.reset()


@pytest.fixture
def processes(broker: Any, tmp_path: Path) -> Iterator[Processes]:
    """Start subprocesses in the session's namespace; every one of them is killed at teardown."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()
