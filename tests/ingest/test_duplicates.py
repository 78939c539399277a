"""Duplicates at every layer: identical bodies, the same wamid in different bodies, the same job twice."""

from __future__ import annotations

from typing import Any

import pytest

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Contact, Message, WebhookStatus
from libs.ingest.process import process_webhook
from libs.settings import Settings
from tests.helpers import queue_length
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest


@pytest.fixture
def ids(db: Database) -> tuple[int, int]:
    """A company and its Meta connection."""
    company_id = f.company(db)
    return company_id, f.meta_connection(db, company_id)


def inbound(*wamids: str, body: str = "hello") -> dict[str, Any]:
    """A Meta webhook with one text message per wamid, from the same contact."""
    return f.meta_payload(
        f.meta_change(
            contacts=[{"profile": {"name": "Ana"}, "wa_id": f.CUSTOMER}],
            messages=[f.meta_message(w, "text", {"body": body}) for w in wamids],
        )
    )


def events(db: Database) -> list[str]:
    """External ids announced as ``message.received`` events."""
    return [e["external_id"] for e in f.events(db, "message.received")]


def test_identical_body_twice_is_one_row_one_job_one_message(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
) -> None:
    # Given Meta redelivers a webhook byte for byte
    body = f.dumps(inbound("wamid.SAME"))
    first = ingest.edge.meta(body)
    second = ingest.edge.meta(body)
    # Then the second answer is 200 "duplicate", and only one row and one job exist
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["status"] == "accepted"
    assert second.json() == {"status": "duplicate"}
    ingest.drain()
    [row] = f.webhooks(db)
    assert (row.status, row.item_count) == (WebhookStatus.PROCESSED, 1)
    assert f.count(db, Message) == 1
    assert events(db) == ["wamid.SAME"]


def test_same_wamid_in_two_bodies_is_stored_and_announced_once(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
) -> None:
    # Given the same message delivered inside two different bodies (e.g. batched differently on a retry)
    first = ingest.meta(inbound("wamid.TWICE"))
    second = ingest.meta(inbound("wamid.OTHER", "wamid.TWICE"))
    # Then both rows are processed, the message stored once and announced once
    assert (first.status, second.status) == (WebhookStatus.PROCESSED, WebhookStatus.PROCESSED)
    assert (first.item_count, second.item_count) == (1, 2)
    assert sorted(m.external_id or "" for m in f.messages(db)) == ["wamid.OTHER", "wamid.TWICE"]
    assert f.count(db, Contact) == 1
    assert sorted(events(db)) == ["wamid.OTHER", "wamid.TWICE"]


def test_same_job_run_twice_stores_nothing_twice(
    db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
) -> None:
    # Given a stored webhook
    webhook_id = f.webhook_row(db, f.dumps(inbound("wamid.J1", "wamid.J2")), status=WebhookStatus.ENQUEUED)
    # When its job runs twice
    first = process_webhook(db, webhook_id)
    second = process_webhook(db, webhook_id)
    # Then the second run is a no-op: no new rows, nothing announced again
    assert first is not None and first.stored == 2
    assert second is None
    assert f.count(db, Message) == 2
    assert sorted(events(db)) == ["wamid.J1", "wamid.J2"]


def test_job_enqueued_twice_on_the_worker_stores_once(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
) -> None:
    webhook_id = f.webhook_row(db, f.dumps(inbound("wamid.Q1")), status=WebhookStatus.ENQUEUED)
    for _ in range(2):
        contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(webhook_id), broker=broker)
    ingest.drain()
    assert f.webhook(db, webhook_id).status == WebhookStatus.PROCESSED
    assert f.count(db, Message) == 1
    assert events(db) == ["wamid.Q1"]


def test_overlapping_bodies_processed_concurrently_store_each_message_once(
    ingest: Ingest, db: Database, broker: Any, settings: Settings, ids: tuple[int, int]
) -> None:
    # Given three bodies sharing messages, all accepted before the worker runs any
    wamids = [f"wamid.C{n}" for n in range(6)]
    bodies = [inbound(*wamids[:4]), inbound(*wamids[2:]), inbound(*wamids[1:5], body="again")]
    for payload in bodies:
        assert ingest.edge.meta(payload).status_code == 200
    # When the worker's threads process them concurrently
    ingest.drain()
    # Then every row is processed and each message is stored and announced exactly once
    assert {w.status for w in f.webhooks(db)} == {WebhookStatus.PROCESSED}
    assert sorted(m.external_id or "" for m in f.messages(db)) == wamids
    assert sorted(events(db)) == wamids
    assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 0
