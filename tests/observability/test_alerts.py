"""The dead-letter threshold alert: one Sentry event per window, however often it is checked."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import alerts, ledger
from libs.settings import Settings
from tests.fakes.sentry import SentryRecorder
from tests.observability.support import flush

WINDOW_MINUTES = 10
WINDOW_S = WINDOW_MINUTES * 60
THRESHOLD = 3


def record_dead_letters(db: Database, count: int) -> None:
    """``count`` new rows in the ledger, as the recorder writes them."""
    now = time.time()
    for _ in range(count):
        message = {"queue_name": "obs", "actor_name": "obs_send", "args": [], "kwargs": {}, "options": {}}
        entry = contracts.RecordDeadLetter(
            message={**message, "message_id": str(uuid.uuid4()), "message_timestamp": int(now * 1000)},
            reason="exhausted",
            error_type="TimeoutError",
            error_message="timed out",
            traceback=None,
            attempts=3,
            first_failed_at=now,
            last_failed_at=now,
        )
        assert ledger.record(db, entry)


def test_one_alert_per_window(sentry: SentryRecorder, broker: Any, db: Database, settings: Settings) -> None:
    def check(now: float) -> bool:
        return alerts.check_threshold(
            db, broker.client, settings.redis_namespace, threshold=THRESHOLD, window_minutes=WINDOW_MINUTES, now=now
        )

    # Two instants in consecutive alert windows, both with every row below inside their last 10 minutes
    started = time.time()
    second_window = math.ceil(started / WINDOW_S) * WINDOW_S
    first_window = second_window - 1

    # Given two dead letters: below the threshold, nothing fires
    record_dead_letters(db, 2)
    assert check(first_window) is False

    # When a third arrives and the threshold is checked many times in the same window
    record_dead_letters(db, 1)
    fired = [check(first_window) for _ in range(5)]
    flush()

    # Then exactly one alert was sent
    assert fired == [True, False, False, False, False]
    [alert] = sentry.events()
    assert alert["fingerprint"] == ["zapq-dead-letter-threshold"]
    assert alert["level"] == "fatal"
    assert alert["extra"]["dead_letters"] == THRESHOLD
    assert alert["extra"]["window_minutes"] == WINDOW_MINUTES
    assert alert["message"] == f"{THRESHOLD} dead letters in the last {WINDOW_MINUTES} min (threshold {THRESHOLD})"

    # When the next window is checked (again many times), it fires once more
    fired = [check(second_window) for _ in range(3)]
    flush()
    assert fired == [True, False, False]
    assert [e["fingerprint"] for e in sentry.events()] == [["zapq-dead-letter-threshold"]] * 2
    assert sentry.problems() == []
