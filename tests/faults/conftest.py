"""Fixtures of the fault-injection suite: a Redis client on this session's namespace, child process groups.

Select the suite with ``pytest -m faults``. Every test starts real processes (``python -m dramatiq …``,
``uvicorn …``) and the fixtures stop every one of them, whatever the test's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from libs.settings import Settings
from tests.conftest import flush_namespace
from tests.faults.support import Group, subprocess_env


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``faults`` marker."""
    config.addinivalue_line("markers", "faults: fault injection with real processes (kills, outages, hostile input)")


@pytest.fixture
def rclient(settings: Settings) -> Iterator[redis.Redis]:
    """A client of the shared Redis, with this session's namespace flushed before and after the test."""
    client = redis.Redis.from_url(settings.redis_url)
    flush_namespace(client, settings.redis_namespace)
    yield client
    flush_namespace(client, settings.redis_namespace)
    client.close()


@pytest.fixture
def groups(tmp_path: Path) -> Iterator[Callable[..., Group]]:
    """``groups(**env)`` makes a process group with extra env; all of them are stopped at teardown."""
    made: list[Group] = []

    def make(**env: str) -> Group:
        group = Group(env=subprocess_env(**env), log_dir=tmp_path)
        made.append(group)
        return group

    yield make
    for group in reversed(made):
        group.stop(grace=10)
