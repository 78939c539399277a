"""Dead letters reach Sentry once each, scrubbed; retries and deferrals never do (real worker, real Redis)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import actions
from libs.deadletters.store import Filter
from libs.errors import Defer, PermanentError, TransientError
from libs.middleware.policy import RetryPolicy
from tests.fakes.sentry import SentryRecorder
from tests.helpers import drain
from tests.observability.support import PERMANENT, PHONE, QUEUE, SERVICE, TOKEN, Attempts, assert_clean, declare, flush


def test_dead_letter_is_one_scrubbed_event(
    sentry: SentryRecorder, sentry_worker: dramatiq.Worker, sentry_broker: Any, db: Database
) -> None:
    # Given an actor with a single attempt that fails for good, naming the recipient and a token
    def reject(recipient: str) -> None:
        raise PermanentError(f"recipient {recipient} rejected (Authorization: Bearer {TOKEN})")

    actor = declare(sentry_broker, reject, "obs_reject", RetryPolicy(attempts=1, kind="fixed", base_ms=0))

    # When it runs on the real worker and the recorder handles its dead letter
    message = actor.send(PHONE)
    drain(sentry_broker, sentry_worker, [QUEUE, contracts.DEAD_LETTER])
    flush()

    # Then exactly one event reached Sentry, grouped by actor + error type, tagged, and scrubbed
    [event] = sentry.events()
    assert event["fingerprint"] == ["zapq-dead-letter", actor.actor_name, PERMANENT]
    assert event["level"] == "error"
    assert {k: event["tags"][k] for k in ("queue", "actor", "error_type", "reason", "service")} == {
        "queue": QUEUE,
        "actor": actor.actor_name,
        "error_type": PERMANENT,
        "reason": "permanent",
        "service": SERVICE,
    }
    assert event["extra"]["message_id"] == message.message_id
    assert event["extra"]["attempts"] == 1
    assert "55…88" in event["extra"]["error_message"]
    assert_clean(sentry.raw_bytes())
    assert sentry.problems() == [] and sentry.rejected == []
    # ... while the Dramatiq integration's per-attempt event was dropped by before_send, not lost elsewhere
    assert sentry.discarded("before_send") == 1
    [row] = actions.list_rows(db, Filter(queue=QUEUE))
    assert row.message_id == message.message_id


@pytest.mark.parametrize("kind", ["transient", "defer"])
def test_retries_and_deferrals_are_never_reported(
    kind: str, sentry: SentryRecorder, sentry_worker: dramatiq.Worker, sentry_broker: Any, db: Database
) -> None:
    # Given an actor that fails (or defers) twice, then succeeds
    attempts = Attempts()

    def flaky(recipient: str) -> None:
        if attempts.next() <= 2:
            if kind == "defer":
                raise Defer(50, reason=f"throttled for {recipient}")
            raise TransientError(f"timeout talking about {recipient}")

    actor = declare(sentry_broker, flaky, f"obs_{kind}", RetryPolicy(attempts=3, kind="fixed", base_ms=50))

    # When it runs to success on the real worker
    actor.send(PHONE)
    drain(sentry_broker, sentry_worker, [QUEUE, contracts.DEAD_LETTER])
    flush()

    # Then it ran three times, nothing was dead-lettered, and no event reached Sentry
    assert attempts.count == 3
    assert actions.list_rows(db, Filter()) == []
    assert sentry.events() == []
    # (the integration did try to report both failed attempts; before_send dropped them)
    assert sentry.discarded("before_send") == 2
    assert_clean(sentry.raw_bytes())


def test_redelivered_recorder_job_reports_once(sentry: SentryRecorder, broker: Any, db: Database) -> None:
    # Given one dead letter (a message id whose UUID starts with digits, as about 2% do)
    from services.scheduler.actors import record_dead_letter

    now = time.time()
    entry = contracts.RecordDeadLetter(
        message={
            "queue_name": QUEUE,
            "actor_name": "obs_send",
            "args": [PHONE],
            "kwargs": {},
            "options": {},
            "message_id": "20240917-5f3c-4d2a-9b1e-7c8d9e0f1a2b",
            "message_timestamp": int(now * 1000),
        },
        reason="permanent",
        error_type=PERMANENT,
        error_message=f"recipient {PHONE} rejected",
        traceback=None,
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
    )

    # When the recorder job runs twice for it (a redelivery)
    record_dead_letter(**dataclasses.asdict(entry))
    record_dead_letter(**dataclasses.asdict(entry))
    flush()

    # Then one ledger row and one event, which names the job's message id unchanged
    assert len(actions.list_rows(db, Filter())) == 1
    [event] = sentry.events()
    assert event["extra"]["message_id"] == entry.message["message_id"]
    assert event["fingerprint"] == ["zapq-dead-letter", "obs_send", PERMANENT]
    assert_clean(sentry.raw_bytes())
    assert sentry.problems() == []
