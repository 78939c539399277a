"""Replay on real Redis with a real worker: fresh attempts, one enqueue per row, a failing replay dies again."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq import Message

from libs import contracts
from libs.db.engine import Database
from libs.db.models import DeadLetter
from libs.deadletters import actions
from tests.helpers import drain, queue_length
from tests.middleware.support import Probe, ledger_rows, record_entry

QUEUES = [contracts.MESSAGES, contracts.DEAD_LETTER]


def dead_flaky_job(key: str, db: Database, broker: Any, worker: dramatiq.Worker, actors: dict[str, Any]) -> DeadLetter:
    """Run the flaky actor (2 tries) until it is dead-lettered; its ledger row."""
    actors["test_flaky"].send(key)
    drain(broker, worker, QUEUES)
    [row] = ledger_rows(db)
    assert (row.actor_name, row.reason, row.attempts, row.replayed_at) == ("test_flaky", "exhausted", 2, None)
    return row


def test_replay_runs_the_job_again_with_fresh_attempts(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given a job dead-lettered after its 2 tries, whose cause has since been fixed
    dead = dead_flaky_job("fixed-later", db, broker, worker, test_actors)
    probe.fixed.add("fixed-later")
    # When its row is replayed
    replayed = actions.replay(db, broker.enqueue, [dead.id])
    drain(broker, worker, QUEUES)
    # Then the same message ran once more with a fresh attempt count and succeeded
    runs = probe.attempts["fixed-later"]
    assert [r.failures for r in runs] == [0, 1, 0]
    assert {r.message_id for r in runs} == {dead.message_id}
    # And the single row shows the replay
    assert replayed == [dead.id]
    [row] = ledger_rows(db)
    assert row.id == dead.id
    assert row.replay_count == 1
    assert row.replayed_at is not None
    assert row.replayed_message_id == dead.message_id


def test_replayed_job_that_fails_again_is_dead_again_in_the_same_row(
    db: Database, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    # Given a dead-lettered job whose cause is not fixed
    dead = dead_flaky_job("still-broken", db, broker, worker, test_actors)
    # When it is replayed and fails its 2 fresh tries again
    actions.replay(db, broker.enqueue, [dead.id])
    drain(broker, worker, QUEUES)
    # Then the same row is dead again with the new error, and remembers the replay
    assert len(probe.attempts["still-broken"]) == 4
    [row] = ledger_rows(db)
    assert row.id == dead.id
    assert row.replayed_at is None
    assert row.replay_count == 1
    assert row.attempts == 2
    assert row.error_message == "still-broken attempt 4 failed"
    assert row.last_failed_at > dead.last_failed_at
    # And it can be replayed once more
    assert actions.replay(db, broker.enqueue, [dead.id]) == [dead.id]


def test_replaying_a_row_twice_enqueues_it_once(broker: Any, db: Database) -> None:
    # Given one dead letter of the messages queue (no worker running)
    actions.record(db, record_entry(queue=contracts.MESSAGES, actor="test_flaky", kwargs={"key": "once"}))
    [row] = ledger_rows(db)
    # When it is replayed twice
    first = actions.replay(db, broker.enqueue, [row.id])
    second = actions.replay(db, broker.enqueue, [row.id])
    # Then only the first enqueued it
    assert (first, second) == ([row.id], [])
    assert queue_length(broker.client, broker.namespace, contracts.MESSAGES) == 1
    [payload] = broker.client.hvals(f"{broker.namespace}:{contracts.MESSAGES}.msgs")
    message = Message.decode(payload)
    assert (message.message_id, message.actor_name, message.kwargs) == (row.message_id, "test_flaky", {"key": "once"})


def test_dry_run_enqueues_nothing(broker: Any, db: Database) -> None:
    actions.record(db, record_entry(queue=contracts.MESSAGES, actor="test_flaky"))
    [row] = ledger_rows(db)
    # When replayed as a dry run
    assert actions.replay(db, broker.enqueue, [row.id], dry_run=True) == [row.id]
    # Then nothing was enqueued and the row is still dead
    assert queue_length(broker.client, broker.namespace, contracts.MESSAGES) == 0
    [after] = ledger_rows(db)
    assert (after.replayed_at, after.replay_count) == (None, 0)


def test_concurrent_replays_of_one_row_enqueue_once(broker: Any, db: Database) -> None:
    # Given one dead letter, and a first replay paused inside its enqueue (row claimed, not yet committed)
    actions.record(db, record_entry(queue=contracts.MESSAGES, actor="test_flaky"))
    [row] = ledger_rows(db)
    inside, release = threading.Event(), threading.Event()

    def slow_enqueue(message: Message[Any]) -> Message[Any]:
        inside.set()
        release.wait(10)
        return broker.enqueue(message)

    results: dict[str, list[int]] = {}
    first = threading.Thread(target=lambda: results.update(first=actions.replay(db, slow_enqueue, [row.id])))
    first.start()
    assert inside.wait(10)
    # When a second replay of the same row runs meanwhile
    results["second"] = actions.replay(db, broker.enqueue, [row.id])
    release.set()
    first.join(10)
    # Then it skipped the claimed row: the job was enqueued once
    assert results == {"first": [row.id], "second": []}
    assert queue_length(broker.client, broker.namespace, contracts.MESSAGES) == 1
