"""Retry policies on real Redis with a real Dramatiq worker: attempts, measured gaps and the dead letter.

The worker fixture polls with ``worker_timeout=50`` ms, so a delayed retry becomes visible at most about
50 ms (delay-queue poll) + 50 ms (queue fetch) after its eta; the tolerance below is chosen from that.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.db.engine import Database
from libs.middleware.deadletter import FAILURES, FIRST_FAILURE
from libs.middleware.retry import is_final_attempt
from tests.helpers import drain
from tests.middleware.support import Probe, capture_enqueues, ledger_rows, to_utc

#: A retry may not run before its delay (minus clock noise) ...
EARLY_S = 0.05
#: ... nor later than the delay plus two 50 ms polling rounds plus scheduling noise.
LATE_S = 0.2 + 2 * 0.05

QUEUES = [contracts.WEBHOOKS, contracts.CAMPAIGNS, contracts.MESSAGES, contracts.DEAD_LETTER]

#: actor → (queue, expected attempts, expected gaps in seconds, qualified error type)
END_TO_END = {
    "test_fail_webhooks": (contracts.WEBHOOKS, 3, [2.0, 4.0], "libs.errors.TransientError"),
    "test_fail_campaigns": (contracts.CAMPAIGNS, 2, [5.0], "RuntimeError"),
    "test_fail_messages": (contracts.MESSAGES, 5, [0.3, 0.6, 1.2, 2.4], "libs.errors.TransientError"),
}


@pytest.mark.slow
def test_default_policies_end_to_end(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given three actors on the real queues that fail on every attempt: webhooks (default 3 tries,
    # 2 s → 4 s), campaigns (default 2 tries, fixed 5 s, unknown exception) and messages (per-actor
    # override 5 tries, 0.3 s doubling)
    # When each is sent once and the worker runs until every queue (and its delay queue) is empty
    for name in END_TO_END:
        test_actors[name].send()
    drain(broker, worker, QUEUES, timeout_ms=30_000)

    print("\nmeasured retry gaps (s), expected → measured:")
    rows = {row.actor_name: row for row in ledger_rows(db)}
    for name, (queue, attempts, expected, error_type) in END_TO_END.items():
        runs = probe.attempts[name]
        gaps = probe.gaps(name)
        print(f"  {queue:10} {name:22} " + ", ".join(f"{e:.1f} → {g:.3f}" for e, g in zip(expected, gaps, strict=True)))
        # Then it ran exactly the policy's number of tries, one message id, counting failures on the way
        assert len(runs) == attempts, name
        assert len({r.message_id for r in runs}) == 1
        assert [r.failures for r in runs] == list(range(attempts))
        # And the gaps between tries match the policy
        for want, got in zip(expected, gaps, strict=True):
            assert want - EARLY_S <= got <= want + LATE_S, f"{name}: waited {got:.3f} s, policy says {want} s"
        # And once exhausted it was dead-lettered and recorded by the real recorder actor
        row = rows[name]
        assert row.message_id == runs[0].message_id
        assert row.queue_name == queue
        assert row.reason == "exhausted"
        assert row.attempts == attempts
        assert row.error_type == error_type
        assert row.error_message.endswith(f"attempt {attempts} failed")
        assert row.traceback is not None
        assert "Traceback (most recent call last)" in row.traceback
        assert f"attempt {attempts} failed" in row.traceback
        assert row.first_failed_at is not None
        assert to_utc(runs[0].wall) <= row.first_failed_at <= to_utc(runs[0].wall + 1)
        assert to_utc(runs[-1].wall) <= row.last_failed_at <= to_utc(runs[-1].wall + 1)
        spent = (row.last_failed_at - row.first_failed_at).total_seconds()
        assert sum(expected) - EARLY_S <= spent <= sum(expected) + LATE_S * len(expected)
        assert row.replayed_at is None
        assert row.replay_count == 0
        assert row.message["options"] == {}, "internal options must not be replayed"
    assert len(rows) == len(END_TO_END)


def test_default_messages_policy_asks_for_3_6_12_24_seconds(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given an always-failing actor on `messages` with the real default policy (5 tries, 3 s doubling),
    # and broker.enqueue wrapped to record each requested delay but really wait at most 20 ms
    with capture_enqueues(broker, max_delay_ms=20) as calls:
        # When it is sent and the worker runs it to the end
        test_actors["test_fail_messages_default"].send()
        drain(broker, worker, [contracts.MESSAGES, contracts.DEAD_LETTER])

    # Then the middleware asked for 3, 6, 12 and 24 s after failures 1..4
    retries = [c for c in calls if c.actor == "test_fail_messages_default" and c.delay is not None]
    print("\nmessages default policy, requested delays (ms):", [c.delay for c in retries])
    assert [c.delay for c in retries] == [3_000, 6_000, 12_000, 24_000]
    assert [c.options[FAILURES] for c in retries] == [1, 2, 3, 4]
    assert len({c.options[FIRST_FAILURE] for c in retries}) == 1
    # And the 5th failure was dead-lettered (no 5th delay) and recorded
    assert len(probe.attempts["test_fail_messages_default"]) == 5
    dead = [c for c in calls if c.queue == contracts.DEAD_LETTER and c.delay is None]
    assert len(dead) == 1
    assert dead[0].kwargs["reason"] == "exhausted"
    assert dead[0].kwargs["attempts"] == 5
    [row] = ledger_rows(db)
    assert (row.actor_name, row.queue_name, row.attempts) == ("test_fail_messages_default", contracts.MESSAGES, 5)


def test_dramatiq_retry_delay_overrides_the_policy_delay(
    broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given an actor that raises dramatiq.Retry(delay=30) once, then succeeds
    probe.scripts["retry-after"] = ["dramatiq_retry"]
    with capture_enqueues(broker) as calls:
        # When it runs
        test_actors["test_scripted"].send("retry-after")
        drain(broker, worker, [contracts.WEBHOOKS])
    # Then the retry waited the delay it asked for (not the webhooks policy's 2 s) and consumed an attempt
    [retry] = [c for c in calls if c.delay is not None]
    assert retry.delay == 30
    assert [a.failures for a in probe.attempts["retry-after"]] == [0, 1]


def test_is_final_attempt(broker: Any, test_actors: dict[str, Any]) -> None:
    # Given messages of actors under the webhooks default policy (3 tries), an override (5 tries) and the
    # recorder (unlimited)
    def message(actor: str, queue: str, failures: int) -> dramatiq.Message[Any]:
        return dramatiq.Message(
            queue_name=queue, actor_name=actor, args=(), kwargs={}, options={FAILURES: failures} if failures else {}
        )

    # Then only the try whose failure would exhaust the policy is final
    assert [is_final_attempt(broker, message("test_fail_webhooks", "webhooks", n)) for n in range(3)] == [
        False,
        False,
        True,
    ]
    assert [is_final_attempt(broker, message("test_fail_messages", "messages", n)) for n in range(5)] == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert not is_final_attempt(broker, message("record_dead_letter", contracts.DEAD_LETTER, 10_000))
    assert not is_final_attempt(broker, None)
