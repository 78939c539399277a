"""Concurrent async jobs (``libs.middleware.concurrency``): each keeps its own time limit on a real worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import TimeLimitExceeded

from libs import contracts
from libs.middleware.policy import RetryPolicy

ONE_TRY = RetryPolicy(attempts=1, kind="fixed", base_ms=10)


class Ended(Middleware):
    """What each test job ended with, by its argument."""

    def __init__(self) -> None:
        self.outcomes: dict[str, BaseException | None] = {}
        self._changed = threading.Condition()

    def after_process_message(
        self, broker: Any, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if message.actor_name == "test_concurrent_sleeper":
            with self._changed:
                self.outcomes[message.args[0]] = exception
                self._changed.notify_all()

    def wait(self, keys: set[str], timeout: float = 10.0) -> dict[str, BaseException | None]:
        with self._changed:
            assert self._changed.wait_for(lambda: keys <= self.outcomes.keys(), timeout), self.outcomes
            return dict(self.outcomes)


async def sleeper(key: str, seconds: float) -> None:
    """Sleeps, or raises its own TimeoutError (as an HTTP client would)."""
    if seconds < 0:
        raise TimeoutError("the provider did not answer")
    await asyncio.sleep(seconds)


@pytest.fixture
def ended(broker: Any) -> Iterator[Ended]:
    probe = Ended()
    broker.add_middleware(probe)
    if "test_concurrent_sleeper" not in broker.actors:
        dramatiq.actor(
            sleeper,
            actor_name="test_concurrent_sleeper",
            queue_name=contracts.MESSAGES,
            concurrent=True,
            time_limit=300,
            retry_policy=ONE_TRY,
            broker=broker,
        )
    yield probe
    broker.middleware.remove(probe)


def test_each_concurrent_job_has_its_own_time_limit(broker: Any, ended: Ended, worker: dramatiq.Worker) -> None:
    # Given three jobs in flight together on one worker thread: one within its 300 ms limit, one over it, and
    # one whose own code raises TimeoutError
    actor = broker.actors["test_concurrent_sleeper"]
    actor.send("quick", 0.05)
    actor.send("slow", 5.0)
    actor.send("own-timeout", -1)
    outcomes = ended.wait({"quick", "slow", "own-timeout"})
    # Then only the slow one was stopped by its time limit, the quick one succeeded, and the job's own
    # TimeoutError is reported as itself, not as a time limit
    assert outcomes["quick"] is None
    assert isinstance(outcomes["slow"], TimeLimitExceeded)
    assert type(outcomes["own-timeout"]) is TimeoutError
