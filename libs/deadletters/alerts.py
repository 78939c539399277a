"""Sentry reporting for dead letters: one event per dead letter, one alert per window over a threshold."""

from __future__ import annotations

import datetime as dt
import time

import redis
import sentry_sdk

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import ledger


def report_dead_letter(entry: contracts.RecordDeadLetter) -> None:
    """One Sentry event, grouped by actor + error type. Arguments and bodies are never attached."""
    message = entry.message
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["zapq-dead-letter", message["actor_name"], entry.error_type]
        scope.set_tag("queue", message["queue_name"])
        scope.set_tag("actor", message["actor_name"])
        scope.set_tag("error_type", entry.error_type)
        scope.set_tag("reason", entry.reason)
        scope.set_extra("message_id", message["message_id"])
        scope.set_extra("attempts", entry.attempts)
        scope.set_extra("error_message", entry.error_message)
        scope.level = "error"
        sentry_sdk.capture_message(f"dead letter: {message['actor_name']} failed with {entry.error_type}")


def check_threshold(
    db: Database,
    client: redis.Redis,
    namespace: str,
    *,
    threshold: int,
    window_minutes: int,
    now: float | None = None,
) -> bool:
    """Fire one alert event when dead letters in the last window reach ``threshold``; True if fired."""
    now = now or time.time()
    since = dt.datetime.fromtimestamp(now - window_minutes * 60, dt.UTC)
    count = ledger.count_since(db, since)
    if count < threshold:
        return False
    bucket = int(now // (window_minutes * 60))
    key = f"{namespace}:zapq:alerts:dead-letters:{bucket}"
    if not client.set(key, count, nx=True, ex=window_minutes * 60 * 2):
        return False
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["zapq-dead-letter-threshold"]
        scope.level = "fatal"
        scope.set_extra("dead_letters", count)
        scope.set_extra("window_minutes", window_minutes)
        sentry_sdk.capture_message(f"{count} dead letters in the last {window_minutes} min (threshold {threshold})")
    return True
