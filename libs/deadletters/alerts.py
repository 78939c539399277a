"""Sentry reporting for dead letters: one event per dead letter, one alert per window above a threshold."""

from __future__ import annotations

import time

import redis
import sentry_sdk

from libs import contracts
from libs.keys import AlertKeys


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
    client: redis.Redis,
    namespace: str,
    entry: contracts.RecordDeadLetter,
    *,
    threshold: int,
    window_minutes: int,
    now: float | None = None,
) -> bool:
    """Count the new dead letter ``entry`` in the last window; fire one alert event per window once the dead
    letters in it exceed ``threshold``. True if fired.

    Dead letters are counted as failures, not ledger rows: a replayed job that fails again is one more (its
    row is refreshed, not added). The count lives in Redis (a sorted set scored by when each was recorded);
    the recorder calls this once per new dead letter, so a redelivered recorder job adds nothing.
    """
    now = now or time.time()
    window_s = window_minutes * 60
    names = AlertKeys(namespace)
    key = names.dead_letters
    failure = f"{entry.message['message_id']}:{entry.last_failed_at!r}"
    pipe = client.pipeline()
    pipe.zadd(key, {failure: now}, nx=True)
    pipe.zremrangebyscore(key, "-inf", now - window_s)
    pipe.zcard(key)
    pipe.expire(key, window_s * 2)
    count = int(pipe.execute()[2])
    if count <= threshold:
        return False
    bucket = int(now // window_s)
    fired = names.fired(bucket)
    if not client.set(fired, count, nx=True, ex=window_s * 2):
        return False
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["zapq-dead-letter-threshold"]
        scope.level = "fatal"
        scope.set_extra("dead_letters", count)
        scope.set_extra("window_minutes", window_minutes)
        sentry_sdk.capture_message(f"{count} dead letters in the last {window_minutes} min (threshold {threshold})")
    return True
