"""A message is sent at most once: redelivered jobs, concurrent jobs, crashes, and worker shutdown."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.messages.status_store import StatusChange, apply_status
from libs.providers import MetaCloudClient, OutboundText
from libs.sending.send import SenderContext
from libs.settings import Settings
from tests.fakes.meta import DEFAULT_TOKEN
from tests.helpers import drain, stored_messages
from tests.sending.conftest import (
    Outcomes,
    configure,
    dead_letters,
    enqueue,
    eventually,
    execute,
    make_connection,
    make_messages,
    message,
    on_loop,
    sends,
)


@pytest.mark.parametrize(
    ("status", "external_id"),
    [("sent", "wamid.ALREADY"), ("delivered", "wamid.ALREADY"), ("queued", "wamid.EARLYSTATUS")],
)
def test_redelivered_job_of_a_sent_message_sends_nothing(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, status: str, external_id: str
) -> None:
    # Given a message already sent (or one whose provider id is already known)
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    done = "UPDATE messages SET status = :status, external_id = :external_id WHERE id = :id"
    execute(db, done, status=status, external_id=external_id, id=message_id)
    # When its job is delivered again, twice
    enqueue(broker, [message_id, message_id])
    drain(broker, worker)
    # Then nothing is sent and the row is untouched
    assert sends(fake_meta) == []
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (status, external_id, 0)
    assert dead_letters(db) == []


def test_two_concurrent_jobs_for_one_message_send_it_once(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given a slow provider, and two jobs for the same message
    configure(fake_meta, latency_ms=500)
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550002"])
    # When both run at the same time
    enqueue(broker, [message_id, message_id])
    drain(broker, worker)
    # Then one sent it, the other found it being sent and stood back until it was
    [accepted] = sends(fake_meta)
    assert any(a.deferred and "being sent" in str(a.exception) for a in outcomes.of(message_id))
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted["wamid"], 1)


def test_crash_between_provider_acceptance_and_our_record_is_reconciled_not_resent(
    db: Database,
    broker: Any,
    settings: Settings,
    context: SenderContext,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
) -> None:
    # Given a message Meta accepted, whose worker died before recording it: 'sending', no wamid
    context.reconcile_seconds = 60
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550003"], body="once")
    client = MetaCloudClient(
        context.http,
        graph_url=fake_meta,
        api_version=settings.meta_api_version,
        phone_number_id="106540352242922",
        access_token=DEFAULT_TOKEN,
    )
    accepted = on_loop(client.send(OutboundText("16505550003", "once", client_ref=str(message_id))))
    crashed = "UPDATE messages SET status = 'sending', attempts = 1, sending_at = now() - interval '5 s' WHERE id = :id"
    execute(db, crashed, id=message_id)
    # When its job is redelivered, it waits for reconciliation
    enqueue(broker, [message_id])
    outcomes.wait_deferred(message_id, "unconfirmed")
    # And the status webhook arrives with our id in biz_opaque_callback_data
    status = StatusChange(accepted.external_id, "sent", client_ref=str(message_id), connection_id=connection)
    with db.session() as session:
        assert apply_status(session, status) == "applied"
    drain(broker, worker)
    # Then the message is recorded with Meta's wamid, and Meta got it only the one time
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted.external_id, 1)
    assert [s["client_ref"] for s in sends(fake_meta)] == [str(message_id)]


def test_worker_shutdown_lets_in_flight_sends_finish_and_record(
    db: Database, broker: Any, settings: Settings, sender: Any, fake_meta: str
) -> None:
    # Given a send in flight (the provider has it and answers after 500 ms)
    configure(fake_meta, latency_ms=500)
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550004"])
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        enqueue(broker, [message_id])
        eventually(lambda: bool(sends(fake_meta)))
    finally:
        # When the worker is stopped gracefully
        worker.stop()
    # Then the in-flight send finished and was recorded, and nothing is left to retry
    [accepted] = sends(fake_meta)
    row = message(db, message_id)
    assert (row.status, row.external_id) == (MessageStatus.SENT, accepted["wamid"])
    assert stored_messages(broker.client, settings.redis_namespace, "messages.DQ") == 0
