"""Fixtures for the dead-letter tests: the test actors of tests.middleware and a fresh probe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from tests.middleware.support import PROBE, Probe, declare_test_actors


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
