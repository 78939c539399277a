"""Fixtures for the middleware tests: subprocesses (the test actors and their probe are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.middleware.support import Processes


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (subprocess tests that take several seconds)."""
    config.addinivalue_line("markers", "slow: real subprocesses / real waits of several seconds")


@pytest.fixture
def processes(broker: Any, tmp_path: Path) -> Iterator[Processes]:
    """Start subprocesses in the session's namespace; every one of them is killed at teardown."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()
