"""The dead-letter ledger on the session's Postgres: upsert, listing filters, purge and retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import dramatiq
import pytest
from sqlalchemy import text

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import actions
from libs.deadletters.store import Filter
from libs.errors import RecordNotFoundError
from tests.helpers import drain
from tests.middleware.support import ledger_rows, record_entry


def age(db: Database, dead_letter_id: int, days: float) -> None:
    """Pretend row ``dead_letter_id`` was recorded ``days`` ago."""
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE dead_letters SET created_at = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": days * 86_400, "id": dead_letter_id},
        )


def seed(db: Database, count: int, **kwargs: Any) -> list[int]:
    """Record ``count`` dead letters; their ids, oldest first."""
    for _ in range(count):
        assert actions.record(db, record_entry(**kwargs))
    return [row.id for row in ledger_rows(db)][-count:]


def test_record_is_an_idempotent_upsert(db: Database) -> None:
    # Given a dead letter recorded once
    entry = record_entry(error_message="first")
    assert actions.record(db, entry) is True
    # When the recorder job is delivered again for the same failure
    again = actions.record(db, entry)
    # Then nothing changes and it is not reported as new
    assert again is False
    [row] = ledger_rows(db)
    assert (row.error_message, row.replay_count, row.replayed_at) == ("first", 0, None)
    assert row.message_id == entry.message["message_id"]
    assert row.first_failed_at is not None
    assert abs(row.first_failed_at.timestamp() - entry.first_failed_at) < 1e-3  # type: ignore[operator]
    assert abs(row.last_failed_at.timestamp() - entry.last_failed_at) < 1e-3


def test_failure_after_replay_refreshes_the_same_row(db: Database) -> None:
    # Given a recorded dead letter that was replayed
    entry = record_entry(error_message="first")
    actions.record(db, entry)
    [row] = ledger_rows(db)
    assert actions.replay(db, lambda m: m, [row.id]) == [row.id]
    # When the replayed job fails again (same message id, new error)
    later = dataclasses.replace(
        entry, error_message="second", reason="permanent", attempts=1, last_failed_at=time.time() + 1
    )
    assert actions.record(db, later) is True
    # Then it is still one row, dead again, with the new error and the replay remembered
    [again] = ledger_rows(db)
    assert again.id == row.id
    assert (again.error_message, again.reason, again.attempts) == ("second", "permanent", 1)
    assert again.replayed_at is None
    assert again.replay_count == 1


def test_list_filters_and_order(db: Database) -> None:
    # Given two webhooks dead letters, one messages dead letter, and an old one
    old, webhook = seed(db, 2)
    [message] = seed(db, 1, queue=contracts.MESSAGES, actor="test_flaky")
    age(db, old, days=3)
    # Then listing is newest first and filters by queue, age and limit
    assert [r.id for r in actions.list_rows(db, Filter())] == [message, webhook, old]
    assert [r.id for r in actions.list_rows(db, Filter(queue=contracts.WEBHOOKS))] == [webhook, old]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    assert [r.id for r in actions.list_rows(db, Filter(since=since))] == [message, webhook]
    assert [r.id for r in actions.list_rows(db, Filter(), limit=1)] == [message]
    assert actions.matching_ids(db, Filter(queue=contracts.WEBHOOKS)) == [old, webhook]


def test_get_unknown_id_raises_not_found(db: Database) -> None:
    with pytest.raises(RecordNotFoundError, match="no dead letter with id 12345"):
        actions.get(db, 12345)


def test_purge_by_id_and_by_age(db: Database) -> None:
    # Given three rows, one of them 10 days old
    first, second, third = seed(db, 3)
    age(db, first, days=10)
    # When one is purged by id and then everything older than a week
    assert actions.purge(db, ids=[second]) == 1
    assert actions.purge(db, older_than=dt.datetime.now(dt.UTC) - dt.timedelta(days=7)) == 1
    # Then only the young one is left
    assert [r.id for r in ledger_rows(db)] == [third]
    with pytest.raises(ValueError):
        actions.purge(db)


def test_prune_keeps_90_days(db: Database) -> None:
    # Given rows recorded 91, 89 and 0 days ago
    ancient, recent, fresh = seed(db, 3)
    age(db, ancient, days=91)
    age(db, recent, days=89)
    # When the retention job prunes with the 90-day default
    deleted = actions.prune(db, 90)
    # Then only the row older than 90 days is gone
    assert deleted == 1
    assert [r.id for r in ledger_rows(db)] == [recent, fresh]


def test_periodic_prune_actor_applies_the_retention_setting(db: Database, broker: Any, worker: dramatiq.Worker) -> None:
    # Given a row 91 days old and a fresh one
    ancient, fresh = seed(db, 2)
    age(db, ancient, days=91)
    # When the scheduler's prune_dead_letters job runs on a real worker
    broker.actors["prune_dead_letters"].send()
    drain(broker, worker, [contracts.MAINTENANCE])
    # Then the old row is gone
    assert [r.id for r in ledger_rows(db)] == [fresh]
