"""Fixtures of the ops tests (stats, probes, scaling, periodiq)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker (real subprocesses, real waits): the default run includes it, as CI's does."""
    config.addinivalue_line("markers", "slow: real subprocesses / real waits of several seconds")
