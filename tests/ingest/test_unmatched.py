"""Webhooks for numbers not registered yet are kept as ``unmatched`` and applied when the connection is created.

End to end: signed webhooks through the edge, a real worker, the operations API creating the connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs import contracts
from libs.api.app import create_app
from libs.cli.main import main
from libs.db.engine import Database
from libs.db.models import Direction, MessageStatus, WebhookStatus
from libs.enqueue import enqueue_many
from libs.ingest import apply as apply_module
from libs.ingest.process import process_webhook
from libs.ops.stats import queue_stats
from libs.settings import Settings
from tests.helpers import drain
from tests.ingest import factories as f
from tests.ingest.conftest import Edge, Ingest

NUMBER_A = "111000111000111"  # registered
NUMBER_B = "222000222000222"  # not registered yet
ANN = "5511900000001"  # writes to A
DORA = "5511900000002"  # writes to B
T0 = 1_750_030_000


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API on this session's database and Redis namespace, with the token."""
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def inbound(number_id: str, wamid: str, sender: str, name: str, **value: Any) -> dict[str, Any]:
    """One ``changes[]`` item: ``sender`` (profile ``name``) wrote to ``number_id``."""
    message = f.meta_message(wamid, "text", {"body": f"hi from {name}"}, sender=sender)
    contact = {"profile": {"name": name}, "wa_id": sender}
    return f.meta_change(number_id, contacts=[contact], messages=[message], **value)


def unmatched_count(broker: Any, settings: Settings, db: Database) -> int | None:
    """``zapq stats``'s count of webhooks kept for numbers without a connection."""
    [row] = [s for s in queue_stats(broker.client, settings.redis_namespace, db) if s.queue == contracts.WEBHOOKS]
    return row.unmatched


def stats_text(capsys: pytest.CaptureFixture[str]) -> str:
    """What ``zapq stats`` prints."""
    assert main(["stats"]) == 0
    return capsys.readouterr().out


def test_a_webhook_for_an_unknown_number_is_applied_once_its_connection_is_created(
    ingest: Ingest, api: TestClient, db: Database, broker: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given company A with its number, company B without one yet, and a message A sent
    a_company, b_company = f.company(db, "A"), f.company(db, "B")
    a_connection = f.meta_connection(db, a_company, number_id=NUMBER_A)
    ours = f.outbound(db, a_company, a_connection, external_id="wamid.OURS")
    # When one webhook brings a message to A, a status of A's message, and a message to B's unknown number
    first = ingest.meta(
        f.meta_payload(
            inbound(NUMBER_A, "wamid.A1", ANN, "Ann", statuses=[f.meta_status("wamid.OURS", "delivered")]),
            inbound(NUMBER_B, "wamid.B1", DORA, "Dora"),
        )
    )
    # Then A's part is applied now, B's part is kept: the webhook is unmatched, and counted as such
    assert (first.status, first.item_count) == (WebhookStatus.UNMATCHED, 3)
    assert first.error is not None and NUMBER_B in first.error
    assert [m.external_id for m in f.messages(db) if m.direction == Direction.INBOUND] == ["wamid.A1"]
    assert f.message(db, ours).status == MessageStatus.DELIVERED
    assert unmatched_count(broker, settings, db) == 1
    assert "webhooks unmatched (kept for numbers without a connection): 1" in stats_text(capsys)
    assert "zapq_webhooks_unmatched 1.0" in api.get("/metrics").text

    # And A's side moves on meanwhile: Ann renames herself, A's message is read
    ingest.meta(
        f.meta_payload(
            inbound(NUMBER_A, "wamid.A2", ANN, "Anna", statuses=[f.meta_status("wamid.OURS", "read", timestamp=T0)])
        )
    )

    # When company B registers its number through the API
    response = api.post(
        "/api/connections",
        json={"company_id": b_company, "provider": "meta", "phone_number_id": NUMBER_B, "access_token": "EAAG-b"},
    )
    assert response.status_code == 201, response.text
    ingest.drain()
    # Then B's message is stored on B's new connection and announced to B
    row = f.webhook(db, first.id)
    assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 3)
    b1 = f.message_by_external_id(db, "wamid.B1")
    assert (b1.company_id, b1.connection_id, b1.direction) == (b_company, response.json()["id"], Direction.INBOUND)
    received = f.events(db, "message.received")
    assert sorted((e["company_id"], e["external_id"]) for e in received) == [
        (a_company, "wamid.A1"),
        (a_company, "wamid.A2"),
        (b_company, "wamid.B1"),
    ]
    assert unmatched_count(broker, settings, db) == 0
    assert "zapq_webhooks_unmatched 0.0" in api.get("/metrics").text
    # And A's part was not applied again: Ann's newer name stands, A's message stays read with one event per step
    names = {(c.company_id, c.wa_id): c.name for c in f.contacts(db)}
    assert names == {(a_company, ANN): "Anna", (b_company, DORA): "Dora"}
    assert f.message(db, ours).status == MessageStatus.READ
    assert [e["status"] for e in f.events(db, "message.status")] == ["delivered", "read"]

    # When the webhook's job is delivered again
    enqueue_many(
        broker.client, settings.redis_namespace, [contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(first.id))]
    )
    ingest.drain()
    # Then nothing is applied twice
    assert len(f.messages(db)) == 4
    assert len(f.events(db, "message.received")) == 3


def test_a_bridge_instance_created_later_gets_its_messages(
    ingest: Ingest, api: TestClient, db: Database, broker: Any, settings: Settings
) -> None:
    # Given a company whose Baileys-bridge instance is not registered yet
    company = f.company(db)
    data = {
        "key": {"remoteJid": f"{DORA}@s.whatsapp.net", "fromMe": False, "id": "3EB0EARLY"},
        "pushName": "Dora",
        "message": {"conversation": "oi"},
        "messageType": "conversation",
        "messageTimestamp": T0,
    }
    # When the bridge posts a message for it, and a state change
    kept = ingest.baileys(f.evolution("messages.upsert", data, instance="inst-new"))
    state = {"instance": "inst-new", "state": "close", "statusReason": 428}
    skipped = ingest.baileys(f.evolution("connection.update", state, instance="inst-new"))
    # Then the message is kept; the state change (about a connection that does not exist) is not
    assert (kept.status, skipped.status) == (WebhookStatus.UNMATCHED, WebhookStatus.PROCESSED)
    assert unmatched_count(broker, settings, db) == 1
    # When the instance is registered
    response = api.post(
        "/api/connections",
        json={
            "company_id": company,
            "provider": "baileys",
            "bridge_url": "http://evolution:8080",
            "bridge_instance": "inst-new",
            "bridge_api_key": "key",
        },
    )
    assert response.status_code == 201, response.text
    ingest.drain()
    # Then its message is stored, and the connection is as created (active)
    stored = f.message_by_external_id(db, "3EB0EARLY")
    assert (stored.connection_id, stored.direction, stored.body) == (response.json()["id"], Direction.INBOUND, "oi")
    assert f.webhook(db, kept.id).status == WebhookStatus.PROCESSED
    assert f.connection(db, response.json()["id"]).status == "active"


def test_the_sweep_applies_unmatched_webhooks_whose_connection_exists(
    ingest: Ingest, db: Database, broker: Any, settings: Settings
) -> None:
    # Given a webhook kept for an unknown number
    company = f.company(db)
    kept = ingest.meta(f.meta_payload(inbound(NUMBER_B, "wamid.B1", DORA, "Dora")))
    assert kept.status == WebhookStatus.UNMATCHED
    # And the number registered without the API's enqueue (Redis failed it, or a script inserted the row)
    f.meta_connection(db, company, number_id=NUMBER_B)
    # When the scheduler's webhook sweep runs
    from services.scheduler.actors import sweep_webhooks

    sweep_webhooks.fn()
    ingest.drain()
    # Then the message is applied and the webhook processed; another sweep finds nothing
    assert f.message_by_external_id(db, "wamid.B1").connection_id is not None
    assert f.webhook(db, kept.id).status == WebhookStatus.PROCESSED
    sweep_webhooks.fn()
    assert broker.do_qsize(contracts.WEBHOOKS) == 0


def test_a_connection_created_while_its_webhook_is_being_kept_still_gets_it(
    edge: Edge, api: TestClient, db: Database, broker: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stored webhook for an unknown number, and a worker that has just found no connection for it
    # (paused there, before its transaction marks the row unmatched)
    company = f.company(db)
    webhook_id = f.webhook_row(db, f.dumps(f.meta_payload(inbound(NUMBER_B, "wamid.RACE", DORA, "Dora"))))
    looked, go_on = threading.Event(), threading.Event()
    original = apply_module._meta_inbound_connections

    def paused(*args: Any) -> Any:
        found = original(*args)
        looked.set()
        assert go_on.wait(30)
        return found

    monkeypatch.setattr(apply_module, "_meta_inbound_connections", paused)
    worker_thread = threading.Thread(target=process_webhook, args=(db, webhook_id))
    worker_thread.start()
    assert looked.wait(30)
    # When the number is registered meanwhile (the API answers only once it looked for kept webhooks)
    created: dict[str, Any] = {}
    body = {"company_id": company, "provider": "meta", "phone_number_id": NUMBER_B, "access_token": "EAAG-b"}
    api_thread = threading.Thread(target=lambda: created.update(response=api.post("/api/connections", json=body)))
    api_thread.start()
    # (the API either waits for the worker's transaction, or — were nothing locked — answers at once)
    wait_for(lambda: advisory_lock_waiters(db) == 1 or not api_thread.is_alive())
    go_on.set()
    worker_thread.join(30)
    api_thread.join(30)
    assert created["response"].status_code == 201
    assert f.webhook(db, webhook_id).status == WebhookStatus.UNMATCHED
    # Then the webhook is not left behind: it is enqueued, and applies the message
    monkeypatch.setattr(apply_module, "_meta_inbound_connections", original)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        drain(broker, worker)
    finally:
        worker.stop()
        broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]
    assert f.webhook(db, webhook_id).status == WebhookStatus.PROCESSED
    assert f.message_by_external_id(db, "wamid.RACE").connection_id == created["response"].json()["id"]


def advisory_lock_waiters(db: Database) -> int:
    """Sessions waiting for an advisory lock in this database."""
    with db.session() as session:
        sql = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(session.execute(text(sql)).scalar_one())


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)  # a poll interval, not a guess at how long the work takes
