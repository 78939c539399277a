"""The provider accepted a send but Postgres failed its record: the next attempt records it, never sends again.

The sender journals the provider's answer in Redis before recording it; an attempt that finds the row still
``sending`` (the record failed: Postgres stalled, reset or failed over) records the journaled provider id
instead of calling the provider a second time — for Meta and the Baileys bridge alike. The fault test with a
real TCP proxy between a sender process and Postgres is ``tests/faults/test_postgres_blink_during_sends.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import dramatiq
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.errors import DependencyUnavailableError
from libs.middleware.policy import RetryPolicy
from libs.sending import send as send_module
from libs.sending.send import SenderContext
from tests.helpers import drain
from tests.sending.conftest import (
    Outcomes,
    enqueue,
    make_baileys_connection,
    make_connection,
    make_messages,
    message,
    sends,
)


@pytest.fixture
def record_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, str, str | None]]]:
    """The first record of accepted sends fails as a dropped Postgres connection does; returns what it refused."""
    original = send_module.record_sent_batch
    refused: list[list[tuple[int, str, str | None]]] = []

    async def record(
        pool: AsyncConnectionPool, sent: list[tuple[int, str, str | None]]
    ) -> Sequence[BaseException | None]:
        if not refused:
            refused.append(list(sent))
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await original(pool, sent)

    monkeypatch.setattr(send_module, "record_sent_batch", record)
    return refused


def provider_sends(provider: str, fake_meta: str, fake_evolution: str) -> list[dict[str, Any]]:
    """What the provider accepted."""
    return sends(fake_meta if provider == "meta" else fake_evolution)


def connection_for(provider: str, db: Database, fake_evolution: str) -> tuple[int, int]:
    """A company and a connection of ``provider``."""
    return make_connection(db) if provider == "meta" else make_baileys_connection(db, fake_evolution)


@pytest.mark.parametrize("provider", ["meta", "baileys"])
def test_an_unrecorded_send_taken_back_by_the_claim_is_recorded_not_sent_again(
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    fake_evolution: str,
    worker: dramatiq.Worker,
    context: SenderContext,
    fast_retries: RetryPolicy,
    outcomes: Outcomes,
    record_fails_once: list[list[tuple[int, str, str | None]]],
    provider: str,
) -> None:
    # Given a sender whose claim takes an unconfirmed send back at once (the reconcile window is over)
    context.reconcile_seconds = 0
    company, connection = connection_for(provider, db, fake_evolution)
    [message_id] = make_messages(db, company, connection, ["5511999990001"])
    # When the provider accepts the send but Postgres drops the connection recording it
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then the failed record deferred the job, and its next attempt recorded the provider's answer
    [[(refused_id, provider_id, _)]] = record_fails_once
    assert refused_id == message_id
    assert isinstance(outcomes.of(message_id)[0].exception, DependencyUnavailableError)
    # And the provider got the message once, the row carries that send's id
    assert len(provider_sends(provider, fake_meta, fake_evolution)) == 1
    row = message(db, message_id)
    assert (row.status, row.external_id) == (MessageStatus.SENT, provider_id)


def test_an_unrecorded_send_is_recorded_without_waiting_for_the_reconcile_window(
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    context: SenderContext,
    fast_retries: RetryPolicy,
    record_fails_once: list[list[tuple[int, str, str | None]]],
) -> None:
    # Given the production reconcile window (30 s) and a record that fails once after Meta accepted the send
    assert context.reconcile_seconds == 30
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    # When the message is sent
    started = time.monotonic()
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then it is recorded from the journal within seconds, not after the window, and sent once
    assert time.monotonic() - started < 10
    [accepted] = sends(fake_meta)
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted["wamid"], 1)
