"""Every class of provider failure, end to end through the actor, the retry middleware and the dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dramatiq
import httpx
import pytest

from libs.db.engine import Database
from libs.db.models import ConnectionStatus, MessageStatus
from libs.errors import ProviderTimeoutError, ProviderTransientError
from libs.messages.status_store import StatusChange, apply_status
from libs.sending.send import SenderContext
from tests.helpers import drain
from tests.sending.conftest import (
    Outcomes,
    configure,
    connection_status,
    dead_letters,
    enqueue,
    make_baileys_connection,
    make_connection,
    make_messages,
    message,
    messages,
    sends,
)

#: Permanent faults (Meta's rule errors — 131026, 131047, 132xxx, … — fail without a dead letter:
#: tests/sending/test_rules.py).
PERMANENT = {
    100: "libs.errors.ProviderPermanentError",
    131008: "libs.errors.ProviderPermanentError",
    131009: "libs.errors.ProviderPermanentError",
    131051: "libs.errors.ProviderPermanentError",
}


def test_permanent_codes_fail_at_once_and_dead_letter(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given four messages, and a Graph API refusing four sends with one permanent code each
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(len(PERMANENT))])
    configure(fake_meta, forced_errors=list(PERMANENT))
    # When their jobs run
    enqueue(broker, ids)
    drain(broker, worker)
    # Then each message failed with its code after one attempt, and nothing was accepted
    rows = messages(db, ids)
    assert sorted(r.error_code or 0 for r in rows) == sorted(PERMANENT)
    assert {(r.status, r.attempts) for r in rows} == {(MessageStatus.FAILED, 1)}
    assert all(r.failed_at is not None and r.sent_at is None for r in rows)
    assert sends(fake_meta) == []
    # And each job was dead-lettered once as permanent, typed by its code
    code_of = {r.id: r.error_code or 0 for r in rows}
    letters = dead_letters(db)
    assert sorted(letter.kwargs["message_id"] for letter in letters) == ids
    for letter in letters:
        assert (letter.reason, letter.attempts) == ("permanent", 1)
        assert letter.error_type == PERMANENT[code_of[letter.kwargs["message_id"]]]


def test_expired_token_flags_the_connection_and_holds_back_its_next_message(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a connection whose access token Meta no longer accepts (401, code 190)
    company, connection = make_connection(db, token="expired-token")
    [first] = make_messages(db, company, connection, ["16505550001"])
    # When a message is sent through it
    enqueue(broker, [first])
    drain(broker, worker)
    # Then the message failed, the connection needs attention, and the job is dead-lettered
    row = message(db, first)
    assert (row.status, row.error_code, row.attempts) == (MessageStatus.FAILED, 190, 1)
    status, reason = connection_status(db, connection)
    assert status == ConnectionStatus.NEEDS_ATTENTION and reason is not None and "190" in reason
    [letter] = dead_letters(db)
    assert (letter.reason, letter.error_type) == ("permanent", "libs.errors.ConnectionNeedsAttentionError")
    # When the next message for that connection comes
    [second] = make_messages(db, company, connection, ["16505550002"])
    enqueue(broker, [second])
    drain(broker, worker)
    # Then it is not sent (not even tried), and its job is dead-lettered as needing attention
    assert sends(fake_meta) == []
    assert (message(db, second).status, message(db, second).attempts) == (MessageStatus.QUEUED, 0)
    letters = {letter.kwargs["message_id"]: letter for letter in dead_letters(db)}
    assert (letters[second].reason, letters[second].error_type) == (
        "permanent",
        "libs.errors.ConnectionNeedsAttentionError",
    )


def test_transient_errors_are_retried_then_sent(
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    fast_retries: Any,
    outcomes: Outcomes,
) -> None:
    # Given a Graph API failing twice: 500 with code 131000, then a 502 HTML page without a code
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550003"])
    configure(fake_meta, forced_errors=[131000, {"http_status": 502, "raw": "<html>Bad Gateway</html>"}])
    # When the job runs
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then it failed twice (transient), was retried, and the third attempt sent it once
    attempts = outcomes.of(message_id)
    assert [type(a.exception) for a in attempts] == [ProviderTransientError, ProviderTransientError, type(None)]
    assert [a.exception.http_status for a in attempts[:2]] == [500, 502]  # type: ignore[union-attr]
    [accepted] = sends(fake_meta)
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted["wamid"], 3)
    assert dead_letters(db) == []


def test_five_server_errors_exhaust_the_attempts(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, fast_retries: Any
) -> None:
    # Given a Graph API answering 500 (131000) to five sends in a row
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550004"])
    configure(fake_meta, forced_errors=[131000] * 5)
    # When the job runs
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then the fifth failure fails the message and dead-letters the job as exhausted
    row = message(db, message_id)
    assert (row.status, row.error_code, row.attempts) == (MessageStatus.FAILED, 131000, 5)
    [letter] = dead_letters(db)
    assert (letter.reason, letter.attempts, letter.error_type) == (
        "exhausted",
        5,
        "libs.errors.ProviderTransientError",
    )
    assert sends(fake_meta) == []


def _ambiguous(context: SenderContext, fake_meta: str, failure: str, reconcile_seconds: int) -> None:
    """Make the next send end ambiguously: the fake hangs past our read timeout, or drops the connection."""
    context.reconcile_seconds = reconcile_seconds
    context.http.timeout = httpx.Timeout(5.0, read=0.3)
    configure(fake_meta, hang_ms=3_000, forced_errors=[failure])


def test_timeout_keeps_the_message_sending_until_the_reconcile_window_ends(
    db: Database,
    broker: Any,
    context: SenderContext,
    fake_meta: str,
    worker: dramatiq.Worker,
    fast_retries: Any,
    outcomes: Outcomes,
) -> None:
    # Given a send that times out (the provider may or may not have accepted it) and no status ever comes
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550005"])
    _ambiguous(context, fake_meta, "timeout", reconcile_seconds=2)
    # When the job runs
    enqueued_at = enqueue(broker, [message_id])
    outcomes.wait(lambda o: bool(o.of(message_id)))
    # Then the failed attempt leaves the row in 'sending' for reconciliation
    assert isinstance(outcomes.of(message_id)[0].exception, ProviderTimeoutError)
    assert message(db, message_id).status == MessageStatus.SENDING
    drain(broker, worker)
    # And the retry waited (deferred, no attempt) until the window ended, then sent it once
    attempts = outcomes.of(message_id)
    assert any(a.deferred and "unconfirmed" in str(a.exception) for a in attempts)
    [accepted] = sends(fake_meta)
    assert accepted["received_at"] - enqueued_at >= 2.0
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted["wamid"], 2)


@pytest.mark.parametrize("failure", ["timeout", "close"])
def test_ambiguous_send_reconciled_by_a_status_is_never_sent_again(
    db: Database,
    broker: Any,
    context: SenderContext,
    fake_meta: str,
    worker: dramatiq.Worker,
    fast_retries: Any,
    outcomes: Outcomes,
    failure: str,
) -> None:
    # Given a send that ends ambiguously (read timeout, or the connection dropped mid-response)
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550006"])
    _ambiguous(context, fake_meta, failure, reconcile_seconds=60)
    enqueue(broker, [message_id])
    # When its retry is waiting for reconciliation
    outcomes.wait_deferred(message_id, "unconfirmed")
    first = outcomes.of(message_id)[0].exception
    assert isinstance(first, ProviderTransientError) and first.http_status is None
    # And Meta's status webhook arrives, carrying our id as biz_opaque_callback_data
    with db.session() as session:
        change = StatusChange(
            "wamid.RECONCILED",
            "delivered",
            dt.datetime.now(dt.UTC),
            client_ref=str(message_id),
            connection_id=connection,
        )
        assert apply_status(session, change) == "applied"
    drain(broker, worker)
    # Then the message is reconciled from the webhook and never sent again
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.DELIVERED, "wamid.RECONCILED", 1)
    assert sends(fake_meta) == []
    assert dead_letters(db) == []


def test_unusable_connection_settings_fail_the_message_instead_of_leaving_it_sending(
    db: Database, broker: Any, sender: Any, fake_evolution: str, worker: dramatiq.Worker, fast_retries: Any
) -> None:
    # Given a Baileys connection saved without its API key (no client can be built for it)
    company, connection = make_baileys_connection(db, fake_evolution, api_key="")
    [message_id] = make_messages(db, company, connection, ["5511999999999"])
    # When the job runs
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then each attempt released the row (nothing reached the bridge), and the last one failed it
    row = message(db, message_id)
    assert (row.status, row.attempts) == (MessageStatus.FAILED, 5)
    [letter] = dead_letters(db)
    assert (letter.reason, letter.attempts) == ("exhausted", 5)
    assert sends(fake_evolution) == []
