"""The dead-letter threshold alert: one Sentry event per window in which dead letters exceed the threshold."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import actions, alerts
from libs.deadletters.store import Filter
from libs.errors import PermanentError
from libs.middleware.policy import RetryPolicy
from libs.settings import Settings
from tests.fakes.sentry import SentryRecorder
from tests.helpers import drain
from tests.observability.support import QUEUE, declare, flush

WINDOW_MINUTES = 10
WINDOW_S = WINDOW_MINUTES * 60
THRESHOLD = 3


def dead_letter(message_id: str | None = None, failed_at: float | None = None) -> contracts.RecordDeadLetter:
    """A new dead letter as the recorder receives it (a new message id unless given)."""
    now = failed_at or time.time()
    message = {"queue_name": "obs", "actor_name": "obs_send", "args": [], "kwargs": {}, "options": {}}
    return contracts.RecordDeadLetter(
        message={**message, "message_id": message_id or str(uuid.uuid4()), "message_timestamp": int(now * 1000)},
        reason="exhausted",
        error_type="TimeoutError",
        error_message="timed out",
        traceback=None,
        attempts=3,
        first_failed_at=now,
        last_failed_at=now,
    )


def test_one_alert_per_window_once_the_threshold_is_exceeded(
    sentry: SentryRecorder, broker: Any, settings: Settings
) -> None:
    def check(entry: contracts.RecordDeadLetter, now: float) -> bool:
        return alerts.check_threshold(
            broker.client, settings.redis_namespace, entry, threshold=THRESHOLD, window_minutes=WINDOW_MINUTES, now=now
        )

    # Two instants in consecutive alert windows, less than a window apart
    started = time.time()
    second_window = math.ceil(started / WINDOW_S) * WINDOW_S
    first_window = second_window - 1

    # Given as many dead letters as the threshold: reaching it fires nothing
    assert [check(dead_letter(), first_window) for _ in range(THRESHOLD)] == [False] * THRESHOLD

    # When one more arrives, and the same dead letter is counted again (a redelivered recorder job)
    again = dead_letter()
    fired = [check(again, first_window) for _ in range(3)]
    flush()

    # Then exactly one alert was sent, counting each dead letter once
    assert fired == [True, False, False]
    [alert] = sentry.events()
    assert alert["fingerprint"] == ["zapq-dead-letter-threshold"]
    assert alert["level"] == "fatal"
    assert alert["extra"]["dead_letters"] == THRESHOLD + 1
    assert alert["extra"]["window_minutes"] == WINDOW_MINUTES
    assert alert["message"] == f"4 dead letters in the last {WINDOW_MINUTES} min (threshold {THRESHOLD})"

    # When more arrive in the next window (the earlier ones still in its last 10 minutes), it fires once more
    fired = [check(dead_letter(), second_window) for _ in range(3)]
    flush()
    assert fired == [True, False, False]
    assert [e["fingerprint"] for e in sentry.events()] == [["zapq-dead-letter-threshold"]] * 2

    # And dead letters older than the window no longer count
    later = second_window + WINDOW_S + 1
    assert [check(dead_letter(), later) for _ in range(THRESHOLD)] == [False] * THRESHOLD
    assert sentry.problems() == []


def test_a_failure_after_a_replay_counts_again(sentry: SentryRecorder, broker: Any, settings: Settings) -> None:
    def check(entry: contracts.RecordDeadLetter) -> bool:
        return alerts.check_threshold(
            broker.client, settings.redis_namespace, entry, threshold=1, window_minutes=WINDOW_MINUTES
        )

    # Given one dead letter (threshold 1: not exceeded)
    first = dead_letter()
    assert check(first) is False
    # When its job is replayed and fails again (same message id, a later failure)
    refailed = dead_letter(first.message["message_id"], failed_at=first.last_failed_at + 1)
    # Then that is a second dead letter in the window, over the threshold
    assert check(refailed) is True


def test_failing_actor_to_threshold_alert_end_to_end(
    sentry: SentryRecorder,
    sentry_worker: dramatiq.Worker,
    sentry_broker: Any,
    db: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import services.scheduler.actors as recorder

    # Given the recorder alerting when more than 2 dead letters fall in a 10-minute window
    monkeypatch.setattr(
        recorder,
        "settings",
        settings.model_copy(update={"alert_dead_letter_threshold": 2, "alert_window_minutes": WINDOW_MINUTES}),
    )

    def reject(n: int) -> None:
        raise PermanentError(f"job {n} rejected")

    actor = declare(sentry_broker, reject, "obs_alert", RetryPolicy(attempts=1, kind="fixed", base_ms=0))

    def dead_letter_events() -> list[dict[str, Any]]:
        return [e for e in sentry.events() if e["fingerprint"][0] == "zapq-dead-letter"]

    def alert_events() -> list[dict[str, Any]]:
        return [e for e in sentry.events() if e["fingerprint"] == ["zapq-dead-letter-threshold"]]

    # When two jobs fail for good on the real worker and the recorder handles their dead letters
    for n in range(2):
        actor.send(n)
    drain(sentry_broker, sentry_worker, [QUEUE, contracts.DEAD_LETTER])
    flush()
    # Then two dead-letter events reached Sentry, and no alert: 2 does not exceed the threshold
    assert len(dead_letter_events()) == 2
    assert alert_events() == []

    # When one of them is replayed and fails again (the same ledger row, dead again)
    [first, _] = actions.list_rows(db, Filter(queue=QUEUE))
    assert actions.replay(db, sentry_broker.enqueue, [first.id]) == [first.id]
    drain(sentry_broker, sentry_worker, [QUEUE, contracts.DEAD_LETTER])
    flush()
    # Then the re-failure is a third dead letter in the window, and the alert fires once, counting it
    assert len(dead_letter_events()) == 3
    [alert] = alert_events()
    assert alert["level"] == "fatal"
    assert alert["extra"]["dead_letters"] == 3
    assert alert["message"] == f"3 dead letters in the last {WINDOW_MINUTES} min (threshold 2)"
    assert sentry.problems() == []
