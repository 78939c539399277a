"""A failed send made sendable again: dead-letter replay (API and CLI) and ``POST /api/messages/{id}/retry``.

Through the real worker, the real API app and the fake Graph API: a message that failed for good is reopened
(fresh attempts, its failure kept in ``history``, its campaign's ``failed_count`` given back) and reaches the
provider once; a message that is not failed is not retried (409 with the reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from libs import contracts
from libs.api.app import create_app
from libs.cli.main import main
from libs.cli.output import EXIT_OK
from libs.db.engine import Database
from libs.db.models import CampaignStatus, ConnectionStatus, MessageStatus, Webhook, WebhookStatus
from libs.deadletters import actions
from libs.messages.status_store import StatusChange, apply_status
from libs.settings import Settings
from tests.fakes.meta import DEFAULT_TOKEN
from tests.helpers import drain
from tests.ingest import factories as f
from tests.ingest.conftest import closed_port
from tests.sending.conftest import (
    campaign_counters,
    configure,
    connection_status,
    dead_letters,
    enqueue,
    make_campaign,
    make_connection,
    make_messages,
    message,
    messages,
    sends,
)


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API (its lifespan running) with the API token."""
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def failed_by_revoked_token(db: Database, broker: Any, worker: dramatiq.Worker) -> tuple[int, int]:
    """A message refused by Meta for a revoked token (190): failed and dead-lettered; (connection, message)."""
    company, connection = make_connection(db, token="revoked-token")
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    enqueue(broker, [message_id])
    drain(broker, worker)
    row = message(db, message_id)
    assert (row.status, row.error_code, row.attempts) == (MessageStatus.FAILED, 190, 1)
    assert connection_status(db, connection)[0] == ConnectionStatus.NEEDS_ATTENTION
    return connection, message_id


def test_replaying_the_dead_letter_of_a_revoked_token_sends_the_message_once_the_token_is_fixed(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, api: TestClient
) -> None:
    # Given a message that failed for good because Meta refused the connection's token (190)
    connection, message_id = failed_by_revoked_token(db, broker, worker)
    [letter] = dead_letters(db)
    assert sends(fake_meta) == []
    # When the operator fixes the token and replays the dead letter through the API
    patched = api.patch(f"/api/connections/{connection}", json={"access_token": DEFAULT_TOKEN})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "active"  # new credentials: the connection is usable again
    replayed = api.post(f"/api/dead-letters/{letter.id}/replay")
    assert replayed.status_code == 200, replayed.text
    drain(broker, worker)
    # Then the message reached Meta once and is sent, with fresh attempts
    [accepted] = sends(fake_meta)
    assert accepted["client_ref"] == str(message_id)
    row = message(db, message_id)
    assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, accepted["wamid"], 1)
    assert (row.error_code, row.error_title, row.failed_at) == (None, None, None)
    # And its failure is kept in its history
    [failure] = row.history
    assert failure["status"] == "failed" and failure["error_code"] == 190 and failure["attempts"] == 1
    assert "ConnectionNeedsAttentionError" in failure["error_title"] and failure["via"] == "replay"
    # And the dead letter stays replayed (the job did not fail again)
    [letter] = dead_letters(db)
    assert letter.replayed_at is not None and letter.replay_count == 1


def test_cli_replay_of_a_failed_campaign_send_sends_it_and_keeps_the_counters_exact(
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a running campaign of two messages, one refused for good by Meta
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002"], priority="low", campaign_id=campaign)
    configure(fake_meta, forced_errors=[100])
    enqueue(broker, ids, tier="low")
    drain(broker, worker)
    assert campaign_counters(db, campaign) == {"sent": 1, "failed": 1}
    [failed] = [row.id for row in messages(db, ids) if row.status == MessageStatus.FAILED]
    [letter] = dead_letters(db)
    # When its dead letter is replayed from the command line
    capsys.readouterr()
    assert main(["dlq", "replay", str(letter.id)]) == EXIT_OK, capsys.readouterr().err
    assert f"replayed 1: [{letter.id}]" in capsys.readouterr().out
    drain(broker, worker)
    # Then it reached Meta (once) and the campaign counts two sent, none failed
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    assert {row.status for row in messages(db, ids)} == {MessageStatus.SENT}
    assert campaign_counters(db, campaign) == {"sent": 2, "failed": 0}
    assert [entry["error_code"] for entry in message(db, failed).history] == [100]


def test_retry_endpoint_sends_a_failed_message_and_refuses_others_with_the_reason(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, api: TestClient
) -> None:
    # Given a message Meta refused for good (template problem) and one still queued (its job not run yet)
    company, connection = make_connection(db)
    [failed] = make_messages(db, company, connection, ["16505550001"])
    configure(fake_meta, forced_errors=[132001])
    enqueue(broker, [failed])
    drain(broker, worker)
    assert message(db, failed).status == MessageStatus.FAILED
    [queued] = make_messages(db, company, connection, ["16505550002"])
    # When the failed one is retried through the API
    response = api.post(f"/api/messages/{failed}/retry")
    # Then it is queued again with its failure in its history, and goes out once
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["attempts"], body["error_code"]) == ("queued", 0, None)
    assert [entry["error_code"] for entry in body["history"]] == [132001]
    assert body["history"][0]["via"] == "api"
    drain(broker, worker)
    [accepted] = sends(fake_meta)
    assert accepted["client_ref"] == str(failed)
    assert (message(db, failed).status, message(db, failed).attempts) == (MessageStatus.SENT, 1)
    # And retrying a message that is not failed is refused with the reason, changing nothing
    again = api.post(f"/api/messages/{failed}/retry")
    assert again.status_code == 409 and "is sent" in again.json()["error"], again.text
    pending = api.post(f"/api/messages/{queued}/retry")
    assert pending.status_code == 409 and "is queued" in pending.json()["error"], pending.text
    assert api.post("/api/messages/999999/retry").status_code == 404
    assert message(db, queued).status == MessageStatus.QUEUED and len(sends(fake_meta)) == 1


def test_retry_refuses_a_message_the_provider_accepted_then_reported_failed(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, api: TestClient
) -> None:
    # Given a message Meta accepted, then reported undeliverable by a status webhook
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    enqueue(broker, [message_id])
    drain(broker, worker)
    wamid = message(db, message_id).external_id
    assert wamid is not None
    with db.session() as session:
        failed = StatusChange(
            external_id=wamid, status="failed", code=131049, title="Not delivered", connection_id=connection
        )
        apply_status(session, failed)
    # When it is retried
    response = api.post(f"/api/messages/{message_id}/retry")
    # Then it is refused: its provider id stays its own, so a late status cannot land on a second send
    assert response.status_code == 409, response.text
    assert "accepted by the provider" in response.json()["error"]
    assert message(db, message_id).status == MessageStatus.FAILED and len(sends(fake_meta)) == 1


def test_retry_refuses_while_the_connection_needs_attention(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, api: TestClient
) -> None:
    # Given a message failed for a revoked token, whose connection still needs attention
    connection, message_id = failed_by_revoked_token(db, broker, worker)
    # When it is retried before the connection is fixed
    response = api.post(f"/api/messages/{message_id}/retry")
    # Then it is refused with what to fix, and stays failed
    assert response.status_code == 409, response.text
    assert f"connection {connection} needs attention" in response.json()["error"]
    assert message(db, message_id).status == MessageStatus.FAILED


def test_replaying_a_failed_webhook_reopens_its_row_and_processes_it(
    db: Database, broker: Any, worker: dramatiq.Worker
) -> None:
    # Given a stored webhook that failed for good (its message had no id) and was dead-lettered
    company = f.company(db)
    f.meta_connection(db, company)
    bad = f.meta_message("wamid.REPLAY1", "text", {"body": "hi"})
    del bad["id"]
    body = f.dumps(f.meta_payload(f.meta_change(messages=[bad])))
    webhook_id = f.webhook_row(db, body, status=WebhookStatus.ENQUEUED)
    contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(webhook_id), broker=broker)
    drain(broker, worker)
    assert f.webhook(db, webhook_id).status == WebhookStatus.FAILED
    [letter] = f.dead_letters(db)
    # When an operator repairs the stored body and replays the dead letter
    good = f.dumps(f.meta_payload(f.meta_change(messages=[f.meta_message("wamid.REPLAY1", "text", {"body": "hi"})])))
    with db.session() as session:
        session.execute(update(Webhook).where(Webhook.id == webhook_id).values(body=good))
    worker.pause()
    assert actions.replay(db, broker.enqueue, [letter.id]) == [letter.id]
    # Then the row is back in the outbox (the sweep would enqueue it again were the job lost)
    assert f.webhook(db, webhook_id).status == WebhookStatus.ENQUEUED
    worker.resume()
    drain(broker, worker)
    # And it is processed: its message stored
    assert f.webhook(db, webhook_id).status == WebhookStatus.PROCESSED
    assert f.message_by_external_id(db, "wamid.REPLAY1").body == "hi"


def test_replay_is_refused_with_the_reason_while_the_connection_needs_attention(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, api: TestClient
) -> None:
    # Given a message failed for a revoked token, dead-lettered
    connection, message_id = failed_by_revoked_token(db, broker, worker)
    [letter] = dead_letters(db)
    # When its dead letter is replayed before the token is fixed
    response = api.post(f"/api/dead-letters/{letter.id}/replay")
    # Then the replay is refused with what to fix, and nothing changed: still dead, still failed, nothing sent
    assert response.status_code == 409, response.text
    assert f"connection {connection} needs attention" in response.json()["error"]
    [letter] = dead_letters(db)
    assert letter.replayed_at is None
    assert message(db, message_id).status == MessageStatus.FAILED and sends(fake_meta) == []


def test_retry_while_the_queue_is_down_leaves_the_message_failed_as_before(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, settings: Settings
) -> None:
    # Given a message in a campaign that Meta refused for good
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    [message_id] = make_messages(db, company, connection, ["16505550001"], priority="low", campaign_id=campaign)
    configure(fake_meta, forced_errors=[131026])
    enqueue(broker, [message_id], tier="low")
    drain(broker, worker)
    before = message(db, message_id)
    # When it is retried through an API whose Redis is unreachable
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    with TestClient(create_app(unreachable)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        response = client.post(f"/api/messages/{message_id}/retry")
    # Then it answers 503 and the message is failed exactly as before, its campaign counters too
    assert response.status_code == 503, response.text
    after = message(db, message_id)
    assert (after.status, after.error_code, after.error_title, after.attempts, after.history) == (
        MessageStatus.FAILED,
        before.error_code,
        before.error_title,
        before.attempts,
        [],
    )
    assert after.failed_at == before.failed_at
    assert campaign_counters(db, campaign) == {"sent": 0, "failed": 1}
