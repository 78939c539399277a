"""Failure paths: an unparseable stored webhook dead-letters; Redis or Postgres down at the edge."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Message, Webhook, WebhookStatus
from libs.ingest.edge import create_app
from libs.ingest.sweep import sweep_webhooks
from libs.settings import Settings
from tests.helpers import all_keys, queue_length
from tests.ingest import factories as f
from tests.ingest.conftest import Edge, Ingest, closed_port


def test_unparseable_webhook_is_marked_failed_and_dead_lettered(
    ingest: Ingest, db: Database, broker: Any, settings: Settings
) -> None:
    # Given a stored webhook whose envelope is fine but whose message has no id (it passed the edge)
    message = f.meta_message("wamid.X", "text", {"body": "hi"})
    del message["id"]
    body = f.dumps(f.meta_payload(f.meta_change(messages=[message])))
    webhook_id = f.webhook_row(db, body, status=WebhookStatus.ENQUEUED)
    # When its job runs on the worker (the dead-letter recorder runs there too)
    sent = contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(webhook_id), broker=broker)
    ingest.drain()
    # Then the row is failed with the parser's message, the raw body kept
    row = f.webhook(db, webhook_id)
    assert row.status == WebhookStatus.FAILED
    assert row.error is not None
    assert row.error.startswith("ParseError: entry[0].changes[0].value.messages[0].id")
    assert row.body == body
    # And the job is in the dead-letter ledger at once (permanent: one attempt)
    [letter] = f.dead_letters(db)
    assert (letter.message_id, letter.actor_name, letter.queue_name) == (sent.message_id, "process_webhook", "webhooks")
    assert (letter.reason, letter.error_type, letter.attempts) == ("permanent", "libs.errors.ParseError", 1)
    assert letter.kwargs == {"webhook_id": webhook_id}
    assert f.count(db, Message) == 0


def test_job_for_a_missing_row_is_dead_lettered(ingest: Ingest, db: Database, broker: Any) -> None:
    contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(424242), broker=broker)
    ingest.drain()
    [letter] = f.dead_letters(db)
    assert (letter.reason, letter.error_type) == ("permanent", "libs.errors.RecordNotFoundError")


def test_redis_down_at_accept_answers_200_and_the_sweep_enqueues_later(
    ingest: Ingest, db: Database, broker: Any, settings: Settings
) -> None:
    company_id = f.company(db)
    f.meta_connection(db, company_id)
    # Given an edge whose Redis is unreachable
    no_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port()}/0"})
    with TestClient(create_app(no_redis)) as client:
        response = Edge(client, settings).meta(f.fixture("meta_incoming_text.json"))
    # Then the webhook is still accepted: durable in Postgres, left 'received', nothing in Redis
    assert response.status_code == 200
    webhook_id = response.json()["id"]
    assert f.webhook(db, webhook_id).status == WebhookStatus.RECEIVED
    assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 0
    # When the outbox sweep runs
    assert sweep_webhooks(db, broker.client, settings.redis_namespace, older_than_seconds=0) == 1
    ingest.drain()
    # Then the worker processes it
    row = f.webhook(db, webhook_id)
    assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
    assert f.count(db, Message) == 1


def test_postgres_down_at_accept_answers_503_and_enqueues_nothing(
    db: Database, broker: Any, settings: Settings
) -> None:
    # Given an edge whose Postgres is unreachable
    no_db = settings.model_copy(
        update={"database_url": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/zapq"}
    )
    with TestClient(create_app(no_db)) as client:
        response = Edge(client, settings).meta(f.fixture("meta_incoming_text.json"))
    # Then Meta is told to retry, and nothing was stored or enqueued
    assert response.status_code == 503
    assert response.json() == {"error": "storage unavailable, retry later"}
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(Webhook)).scalar_one() == 0
    assert all_keys(broker.client, settings.redis_namespace) == []
