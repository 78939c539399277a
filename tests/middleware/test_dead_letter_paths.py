"""Permanent errors, deferral and the defer budget on real Redis with a real worker and the real recorder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from libs import contracts
from libs.db.engine import Database
from libs.middleware.deadletter import DEFERS, FAILURES
from libs.middleware.retry import RetryMiddleware
from tests.helpers import drain
from tests.middleware.support import Probe, capture_enqueues, ledger_rows, retry_middleware

QUEUES = [contracts.WEBHOOKS, contracts.DEAD_LETTER]


@pytest.fixture
def small_defer_budget(broker: Any) -> Iterator[RetryMiddleware]:
    """The shared broker's retry middleware with a defer budget of 2, restored afterwards."""
    middleware = retry_middleware(broker)
    saved = middleware.defer_budget
    middleware.defer_budget = 2
    yield middleware
    middleware.defer_budget = saved


def test_permanent_error_is_dead_lettered_after_one_attempt(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given an actor on `webhooks` (3 tries by default) that raises a PermanentError
    with capture_enqueues(broker) as calls:
        # When it runs
        message = test_actors["test_permanent"].send()
        drain(broker, worker, QUEUES)
    # Then it ran once, was never scheduled again, and its ledger row says "permanent"
    assert len(probe.attempts["test_permanent"]) == 1
    assert not [c for c in calls if c.actor == "test_permanent" and c.delay is not None]
    [row] = ledger_rows(db)
    assert row.message_id == message.message_id
    assert (row.queue_name, row.actor_name, row.reason, row.attempts) == (
        contracts.WEBHOOKS,
        "test_permanent",
        "permanent",
        1,
    )
    assert row.error_type == "libs.errors.PermanentError"
    assert row.error_message == "the payload can never be handled"
    assert row.first_failed_at is not None and row.first_failed_at <= row.last_failed_at


@pytest.mark.parametrize("signal", ["defer", "rate_limited"])
def test_defer_waits_without_consuming_an_attempt(
    signal: str, db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given an actor that fails once (transient), then defers twice by 150 ms, then succeeds
    probe.defer_ms = 150
    probe.scripts["deferred"] = ["transient", signal, signal, "ok"]
    with capture_enqueues(broker, max_delay_ms=200) as calls:
        # When it runs (the transient retry's 2 s wait is shortened to 200 ms; deferrals wait for real)
        test_actors["test_scripted"].send("deferred")
        drain(broker, worker, QUEUES)

    runs = probe.attempts["deferred"]
    # Then it ran four times and succeeded: nothing was dead-lettered
    assert len(runs) == 4
    assert ledger_rows(db) == []
    # And the deferrals were re-enqueued with the requested delay, keeping the failure count at 1
    scheduled = [c for c in calls if c.actor == "test_scripted" and c.delay is not None]
    assert [c.delay for c in scheduled] == [2_000, 150, 150]
    assert [(c.options.get(FAILURES), c.options.get(DEFERS)) for c in scheduled] == [(1, None), (1, 1), (1, 2)]
    assert [(r.failures, r.defers) for r in runs] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    # And each deferred try waited at least its delay
    gaps = probe.gaps("deferred")
    assert all(g >= 0.15 - 0.05 for g in gaps[1:]), gaps


def test_exceeding_the_defer_budget_dead_letters(
    small_defer_budget: RetryMiddleware,
    db: Database,
    broker: Any,
    worker: dramatiq.Worker,
    probe: Probe,
    test_actors: dict[str, Any],
) -> None:
    # Given a defer budget of 2 and an actor that always defers by 20 ms
    probe.defer_ms = 20
    probe.scripts["always-busy"] = ["defer"] * 10
    # When it runs
    message = test_actors["test_scripted"].send("always-busy")
    drain(broker, worker, QUEUES)
    # Then it ran 3 times (the budget, plus the try that exceeded it) and was dead-lettered as "defer_budget"
    assert len(probe.attempts["always-busy"]) == 3
    [row] = ledger_rows(db)
    assert row.message_id == message.message_id
    assert row.reason == "defer_budget"
    assert row.attempts == 0, "deferrals are not attempts"
    assert row.error_type == "libs.errors.Defer"
    assert row.error_message == "deferred 2 times (budget 2): always-busy busy"


def test_replayed_message_is_stripped_of_internal_options(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given a job that failed transiently, was deferred, then failed permanently
    probe.defer_ms = 10
    probe.scripts["mixed"] = ["transient", "defer", "permanent"]
    with capture_enqueues(broker, max_delay_ms=20):
        test_actors["test_scripted"].send("mixed")
        drain(broker, worker, QUEUES)
    # Then its ledger row keeps the original message: args and actor, but none of zapq's or Redis's options
    [row] = ledger_rows(db)
    assert (row.reason, row.attempts) == ("permanent", 2)
    assert row.message["args"] == ["mixed"]
    assert row.args == ["mixed"]
    assert row.message["options"] == {}
    assert row.message["queue_name"] == contracts.WEBHOOKS


def test_a_retry_that_cannot_be_enqueued_is_not_lost(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given Redis refusing the enqueue of the retry copy (a blip between the job's fetch and its ack)
    original = broker.enqueue

    def flaky_enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        if delay is not None:
            raise redis.ConnectionError("connection reset by peer")
        return original(message, delay=delay)

    broker.enqueue = flaky_enqueue
    try:
        # When a job fails transiently
        probe.scripts["blip"] = ["transient"]
        message = test_actors["test_scripted"].send("blip")
        drain(broker, worker, QUEUES)
    finally:
        del broker.enqueue
    # Then the job was not acked away: it is kept in Dramatiq's dead-letter set of its queue
    ns = broker.namespace
    assert broker.client.zcard(f"{ns}:{contracts.WEBHOOKS}.XQ") == 1
    [payload] = broker.client.hvals(f"{ns}:{contracts.WEBHOOKS}.XQ.msgs")
    assert dramatiq.Message.decode(payload).message_id == message.message_id
