"""Every event type reaches a real receiver, signed per Standard Webhooks, in order per conversation."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook
from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.events.types import DATA_MODELS, EVENT_TYPES, MESSAGE_MEDIA, parse_event_id
from libs.ingest.process import process_webhook
from libs.messages.status_store import record_failed_async, record_sent_many_async
from libs.settings import Settings
from tests.events.conftest import customer_writes, make_endpoint
from tests.fakes.crm import CrmReceiver
from tests.ingest import factories as f


def run(settings: Settings, work: Any) -> None:
    """Run ``work(pool)`` on a fresh asyncio pool (what the sender does, from a test)."""

    async def main() -> None:
        pool = AsyncConnectionPool(settings.libpq_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
        async with pool:
            await work(pool)

    asyncio.run(main())


def statuses(db: Database, number_id: str, *items: dict[str, Any]) -> None:
    """A Meta status webhook, stored and applied."""
    body = f.meta_payload(f.meta_change(number_id=number_id, statuses=list(items)))
    process_webhook(db, f.webhook_row(db, f.dumps(body)))


@pytest.mark.usefixtures("policy")
def test_every_event_type_is_delivered_signed_and_verifiable(
    api: TestClient, db: Database, settings: Settings, crm: tuple[CrmReceiver, str]
) -> None:
    receiver, url = crm
    # Given a company with a Meta connection and an endpoint taking every event type
    company = api.post("/api/companies", json={"name": "Acme"}).json()
    connection = api.post(
        "/api/connections",
        json={
            "company_id": company["id"],
            "provider": "meta",
            "phone_number_id": "pn-events",
            "access_token": "t",
            "service_window": "off",  # free-form messages to numbers that never wrote
        },
    ).json()
    endpoint = make_endpoint(api, company["id"], url + "/hooks/zapq")
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    receiver.config.secrets = [secret]

    # When every kind of fact happens
    # connection.status: inactive, then active again
    assert api.post(f"/api/connections/{connection['id']}/deactivate").status_code == 200
    assert api.patch(f"/api/connections/{connection['id']}", json={"status": "active"}).status_code == 200
    # message.received: a customer writes
    customer_writes(db, "pn-events", "5511988887777", "hello", wamid="wamid.IN1")
    # message.created: two messages from the API; message.status: one sent, delivered, read; one failed
    first = api.post("/api/messages", json={"company_id": company["id"], "to": "5511988887777", "text": "hi"}).json()
    second = api.post("/api/messages", json={"company_id": company["id"], "to": "5511977776666", "text": "yo"}).json()

    async def sender(pool: AsyncConnectionPool) -> None:
        await record_sent_many_async(pool, [(first["id"], "wamid.OUT1", None)])
        await record_failed_async(pool, second["id"], code=131026, title="Message undeliverable")

    run(settings, sender)
    statuses(db, "pn-events", f.meta_status("wamid.OUT1", "delivered"), f.meta_status("wamid.OUT1", "read"))
    # campaign.status: started, paused, resumed, cancelled; another scheduled
    campaign = api.post(
        "/api/campaigns",
        json={"company_id": company["id"], "connection_id": connection["id"], "name": "Promo", "text": "Hi {name}"},
    ).json()
    csv = "phone,name\n5511911112222,Bia\n"
    api.post(f"/api/campaigns/{campaign['id']}/recipients", content=csv, headers={"content-type": "text/csv"})
    for action in ("start", "pause", "resume", "cancel"):
        assert api.post(f"/api/campaigns/{campaign['id']}/{action}").status_code == 200, action
    later = api.post(
        "/api/campaigns",
        json={"company_id": company["id"], "connection_id": connection["id"], "name": "Later", "text": "Hi"},
    ).json()
    api.post(f"/api/campaigns/{later['id']}/recipients", content=csv, headers={"content-type": "text/csv"})
    start_at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert api.post(f"/api/campaigns/{later['id']}/start", json={"start_at": start_at}).status_code == 200
    # contact.opted_out / contact.opted_in: a number put on the opt-out list, then taken off
    assert api.post("/api/opt-outs", json={"company_id": company["id"], "phones": ["5511966665555"]}).json()["added"]
    assert api.delete("/api/opt-outs/5511966665555", params={"company_id": company["id"]}).status_code == 204

    # Then the receiver gets every event once, each verified with the standardwebhooks library
    # connection, received, created, sent, failed, delivered+read, campaign, opt-out + opt-in
    expected = 2 + 1 + 2 + 1 + 1 + 2 + 4 + 1 + 2
    deliveries = receiver.wait_for(expected, timeout=20)
    assert receiver.refused == 0
    assert {d.path for d in deliveries} == {"/hooks/zapq"}
    for delivery in deliveries:
        headers = {
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(delivery.timestamp),
            "webhook-signature": delivery.signature,
        }
        assert Webhook(secret).verify(delivery.body, headers) == delivery.payload
        assert parse_event_id(delivery.webhook_id) is not None
        assert set(delivery.payload) == {"type", "timestamp", "data"}
        DATA_MODELS[delivery.type].model_validate(delivery.data)  # the published schema holds
    kinds = [(d.type, d.data.get("status")) for d in deliveries]
    assert sorted(kinds, key=str) == sorted(
        [
            ("connection.status", "inactive"),
            ("connection.status", "active"),
            ("message.received", None),
            ("message.created", "queued"),
            ("message.created", "queued"),
            ("message.status", "sent"),
            ("message.status", "failed"),
            ("message.status", "delivered"),
            ("message.status", "read"),
            ("campaign.status", "started"),
            ("campaign.status", "paused"),
            ("campaign.status", "resumed"),
            ("campaign.status", "cancelled"),
            ("campaign.status", "scheduled"),
            ("contact.opted_out", "opted_out"),
            ("contact.opted_in", "opted_in"),
        ],
        key=str,
    )
    # (message.media needs the media fetcher and a provider's file: tests/media/test_fetch.py writes it and checks
    # its schema; its delivery is this same path)
    assert {d.type for d in deliveries} == set(EVENT_TYPES) - {MESSAGE_MEDIA}
    # And the failed status carries Meta's code and title; the received message its contact and text
    failed = next(d.data for d in deliveries if d.data.get("status") == "failed")
    assert failed["error"] == {"code": 131026, "title": "Message undeliverable", "reason": "undeliverable"}
    received = next(d.data for d in deliveries if d.type == "message.received")
    assert (received["contact"], received["text"]) == ({"wa_id": "5511988887777", "name": "Ana"}, "hello")
    # And within each conversation the order is the order of the facts
    out1 = [d.data["status"] for d in deliveries if d.data.get("external_id") == "wamid.OUT1"]
    assert out1 == ["sent", "delivered", "read"]
    promo = [
        d.data["status"]
        for d in deliveries
        if d.data.get("campaign_id") == campaign["id"] and d.type == "campaign.status"
    ]
    assert promo == ["started", "paused", "resumed", "cancelled"]


def test_many_pump_jobs_at_once_deliver_each_event_once_in_order(
    api: TestClient, db: Database, broker: Any, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    receiver.config.latency_ms = 20  # deliveries stay in flight while the extra pumps arrive
    company = api.post("/api/companies", json={"name": "Acme"}).json()
    api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-pumps", "access_token": "t"},
    )
    endpoint = make_endpoint(api, company["id"], url)
    # Given 200 events of 20 conversations
    for n in range(200):
        customer_writes(db, "pn-pumps", f"55119{n % 20:08d}", str(n), wamid=f"wamid.P{n}")
    # When 30 pump jobs of that endpoint are enqueued at once, on top of the publisher's own kicks
    jobs = [contracts.DELIVER_EVENTS.message(contracts.DeliverEvents(endpoint["id"])) for _ in range(30)]
    enqueue_many(broker.client, broker.namespace, jobs)
    # Then each event arrives exactly once (no second pump re-sent what the first had in flight), in order
    received = receiver.wait_for(200, timeout=30)
    assert len(receiver.arrivals) == 200, "an event was delivered twice"
    by_contact: dict[str, list[int]] = {}
    for delivery in received:
        by_contact.setdefault(delivery.data["contact"]["wa_id"], []).append(int(delivery.data["text"]))
    assert all(numbers == sorted(numbers) for numbers in by_contact.values())
