"""Sends held by the state of their connection or campaign: parked (no attempt, no deferral), released when it ends.

A hold lasts as long as its cause — an inactive or disconnected connection, a paused campaign — however long
that is, up to the maximum age of a held message (``ZAPQ_HOLD_MAX_AGE_SECONDS``); it never spends the defer
budget. Whatever makes the connection active again (a bridge's ``connection.update`` ``open``, ``PATCH
/api/connections/{id}``, an operator's SQL) releases its sends within a poll of the sender.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from libs import contracts
from libs.api.app import create_app as create_api
from libs.campaigns.actions import unpark_campaigns
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import CampaignStatus, ConnectionStatus, MessageStatus
from libs.ingest.edge import create_app
from libs.middleware.retry import RetryMiddleware
from libs.sending.holds import Holds, release_ended, send_job
from libs.sending.send import SenderContext
from libs.settings import Settings
from tests.fakes.evolution import DEFAULT_INSTANCE
from tests.helpers import drain, queue_length
from tests.ingest import factories as f
from tests.ingest.conftest import Edge
from tests.sending.conftest import (
    Outcomes,
    campaign_counters,
    configure,
    connection_status,
    dead_letters,
    enqueue,
    eventually,
    execute,
    make_baileys_connection,
    make_campaign,
    make_connection,
    make_messages,
    message,
    messages,
    sends,
)


@pytest.fixture
def edge(settings: Settings, db: Database, broker: Any) -> Iterator[Edge]:
    """The webhook edge app (its lifespan running), posting into the shared broker."""
    with TestClient(create_app(settings)) as client:
        yield Edge(client, settings)


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API (its lifespan running) with the API token."""
    with TestClient(create_api(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def held(broker: Any, settings: Settings) -> dict[str, int]:
    """Held sends per hold (``connection:<id>`` / ``campaign:<id>``)."""
    return Holds(settings.redis_namespace).counts(broker.client)


def test_inactive_connection_holds_sends_until_it_is_active_again(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
) -> None:
    # Given an inactive connection with three messages to send
    company, connection = make_connection(db)
    execute(db, "UPDATE connections SET status = 'inactive' WHERE id = :id", id=connection)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002", "16505550003"])
    # When their jobs run
    enqueue(broker, ids)
    drain(broker, worker)
    # Then they are held: parked once each, never tried, never failed, not deferred over and over
    assert sends(fake_meta) == []
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.QUEUED, 0)}
    assert [a.exception for a in outcomes.attempts] == [None, None, None]
    assert held(broker, settings) == {f"connection:{connection}": 3}
    # When the connection is reactivated (here by hand: any way of making it active releases its sends)
    execute(db, "UPDATE connections SET status = 'active' WHERE id = :id", id=connection)
    eventually(lambda: len(sends(fake_meta)) == 3)
    drain(broker, worker)
    # Then they go out, one attempt each
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.SENT, 1)}
    assert not [a for a in outcomes.attempts if a.failed] and dead_letters(db) == []
    assert held(broker, settings) == {}


def test_a_send_to_a_disconnected_bridge_is_held_and_goes_out_once_it_reconnects(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_evolution: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
    edge: Edge,
) -> None:
    # Given a Baileys connection whose WhatsApp session just dropped (the bridge answers "Connection Closed")
    company, connection = make_baileys_connection(db, fake_evolution)
    configure(fake_evolution, instances={DEFAULT_INSTANCE: "close"})
    [message_id] = make_messages(db, company, connection, ["5511999999901"])
    # When its message is sent
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then it is held, not dead-lettered: nothing sent, no attempt spent, the connection inactive with the reason
    assert sends(fake_evolution) == [] and dead_letters(db) == []
    row = message(db, message_id)
    assert (row.status, row.attempts, row.error_code) == (MessageStatus.QUEUED, 0, None)
    status, reason = connection_status(db, connection)
    assert status == ConnectionStatus.INACTIVE and reason is not None and "Connection Closed" in reason
    assert held(broker, settings) == {f"connection:{connection}": 1}
    # When the session opens again and the bridge reports it
    configure(fake_evolution, instances={DEFAULT_INSTANCE: "open"})
    data = {"instance": DEFAULT_INSTANCE, "state": "open", "statusReason": 200}
    response = edge.baileys(f.evolution("connection.update", data, instance=DEFAULT_INSTANCE))
    assert response.status_code == 200, response.text
    # Then the held message goes out, once
    eventually(lambda: len(sends(fake_evolution)) == 1)
    drain(broker, worker)
    assert [s["number"] for s in sends(fake_evolution)] == ["5511999999901"]
    row = message(db, message_id)
    assert (row.status, row.attempts) == (MessageStatus.SENT, 1)
    assert connection_status(db, connection) == (ConnectionStatus.ACTIVE, None)
    assert dead_letters(db) == [] and held(broker, settings) == {}


def test_a_hold_outlasting_the_defer_budget_dead_letters_nothing(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
    api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a defer budget of 2 (a deferred hold would be dead-lettered after ~0.4 s here)
    [retries] = [m for m in broker.middleware if isinstance(m, RetryMiddleware)]
    monkeypatch.setattr(retries, "defer_budget", 2)
    # And a deactivated connection with two messages
    company, connection = make_connection(db)
    assert api.post(f"/api/connections/{connection}/deactivate").status_code == 200
    ids = make_messages(db, company, connection, ["16505550001", "16505550002"])
    # When their jobs run and the hold lasts (the queues drain: nothing is waiting to run again)
    enqueue(broker, ids)
    drain(broker, worker)
    # Then nothing is dead-lettered or deferred: both are held
    assert dead_letters(db) == [] and not [a for a in outcomes.attempts if a.exception is not None]
    assert held(broker, settings) == {f"connection:{connection}": 2}
    # When the connection is reactivated through the API
    response = api.patch(f"/api/connections/{connection}", json={"status": "active"})
    assert response.status_code == 200, response.text
    # Then both go out once
    eventually(lambda: len(sends(fake_meta)) == 2)
    drain(broker, worker)
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.SENT, 1)}
    assert dead_letters(db) == []


def test_a_send_held_past_the_maximum_age_fails_with_the_hold_as_its_reason(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    context: SenderContext,
) -> None:
    # Given a maximum hold of 2 s and an inactive connection
    context.hold_max_age_s = 2
    company, connection = make_connection(db)
    execute(db, "UPDATE connections SET status = 'inactive', status_reason = 'number banned' WHERE id = :id",
            id=connection)  # fmt: skip
    # And a message queued an hour ago, and one queued now
    [old, young] = make_messages(db, company, connection, ["16505550001", "16505550002"])
    execute(db, "UPDATE messages SET queued_at = now() - interval '1 hour' WHERE id = :id", id=old)
    # When their jobs run
    enqueue(broker, [old, young])
    drain(broker, worker)
    # Then the old one fails at once, with the hold as its reason, and is dead-lettered (replayable)
    row = message(db, old)
    assert row.status == MessageStatus.FAILED and row.error_title is not None
    assert f"connection {connection} inactive (number banned)" in row.error_title and "held" in row.error_title
    [letter] = dead_letters(db)
    assert (letter.reason, letter.error_type) == ("permanent", "libs.errors.HoldExpiredError")
    # And the young one is held until it is 2 s old, then fails the same way
    eventually(lambda: message(db, young).status == MessageStatus.FAILED)
    drain(broker, worker)
    assert "held" in (message(db, young).error_title or "")
    assert sends(fake_meta) == [] and held(broker, settings) == {}


def test_bridge_close_event_stops_sends_and_open_resumes_them(
    db: Database,
    broker: Any,
    sender: Any,
    fake_evolution: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
    edge: Edge,
) -> None:
    company, connection = make_baileys_connection(db, fake_evolution)

    def connection_update(state: str, when: str) -> None:
        data = {"instance": DEFAULT_INSTANCE, "state": state, "statusReason": 428}
        response = edge.baileys(f.evolution("connection.update", data, instance=DEFAULT_INSTANCE, when=when))
        assert response.status_code == 200, response.text
        drain(broker, worker)

    # Given a Baileys connection that sends
    [first] = make_messages(db, company, connection, ["5511999999901"])
    enqueue(broker, [first])
    drain(broker, worker)
    assert message(db, first).status == MessageStatus.SENT
    # When the bridge reports the WhatsApp session closed
    connection_update("close", when="2025-10-21T12:00:00.000Z")
    # Then the connection is inactive, and its next message is held, not sent
    assert connection_status(db, connection) == (ConnectionStatus.INACTIVE, "bridge reported close (428)")
    [second] = make_messages(db, company, connection, ["5511999999902"])
    enqueue(broker, [second])
    drain(broker, worker)
    assert [s["number"] for s in sends(fake_evolution)] == ["5511999999901"]
    assert message(db, second).status == MessageStatus.QUEUED
    # When the session opens again, the held message goes out
    connection_update("open", when="2025-10-21T12:05:00.000Z")
    eventually(lambda: len(sends(fake_evolution)) == 2)
    drain(broker, worker)
    assert [s["number"] for s in sends(fake_evolution)] == ["5511999999901", "5511999999902"]
    assert (message(db, second).status, message(db, second).attempts) == (MessageStatus.SENT, 1)


def test_paused_campaign_parks_its_messages_until_resumed(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
) -> None:
    # Given a paused campaign with two messages
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.PAUSED)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002"], priority="low", campaign_id=campaign)
    # When their jobs run, they are parked: no send, no deferral loop, no attempt, nothing failed
    enqueue(broker, ids, tier="low")
    drain(broker, worker)
    assert sends(fake_meta) == []
    assert [a.exception for a in outcomes.attempts] == [None, None]
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.QUEUED, 0)}
    lanes = Lanes(settings.redis_namespace)
    assert lanes.parked_campaigns(broker.client) == [campaign]
    # And the scheduler's sweep leaves a campaign that is still paused alone
    assert unpark_campaigns(db, broker.client, lanes) == []
    # When the campaign is resumed (the API unparks it; here the sweep does, as after a lost unpark)
    execute(db, "UPDATE campaigns SET status = 'running' WHERE id = :id", id=campaign)
    assert unpark_campaigns(db, broker.client, lanes) == [campaign]
    # Then they are sent once and counted
    outcomes.wait(lambda o: sum(1 for a in o.attempts if a.exception is None) == 4)
    eventually(lambda: len(sends(fake_meta)) == 2)
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.SENT, 1)}
    assert campaign_counters(db, campaign) == {"sent": 2, "failed": 0}
    assert lanes.parked_campaigns(broker.client) == [] and lanes.backlog(broker.client) == 0


def test_normal_tier_message_of_a_paused_campaign_is_held_until_resumed(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
) -> None:
    # Campaign (low-tier) traffic parks in its company's lane; any other send of a paused campaign is held too
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.PAUSED)
    [message_id] = make_messages(db, company, connection, ["16505550001"], campaign_id=campaign)
    enqueue(broker, [message_id])
    drain(broker, worker)
    assert held(broker, settings) == {f"campaign:{campaign}": 1} and sends(fake_meta) == []
    execute(db, "UPDATE campaigns SET status = 'running' WHERE id = :id", id=campaign)
    eventually(lambda: len(sends(fake_meta)) == 1)
    drain(broker, worker)
    assert [int(s["client_ref"]) for s in sends(fake_meta)] == [message_id]
    assert not [a for a in outcomes.attempts if a.exception is not None]


def test_cancelled_campaign_cancels_its_messages(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a cancelled campaign whose messages were already enqueued
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.CANCELLED)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002"], priority="low", campaign_id=campaign)
    # When their jobs run
    enqueue(broker, ids, tier="low")
    drain(broker, worker)
    # Then they are cancelled, nothing is sent, and nothing is dead-lettered
    assert {r.status for r in messages(db, ids)} == {MessageStatus.CANCELLED}
    assert sends(fake_meta) == [] and dead_letters(db) == []


def test_failed_sends_are_counted_on_their_campaign(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a running campaign of three messages, one of which Meta refuses for good
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    recipients = ["16505550001", "16505550002", "16505550003"]
    ids = make_messages(db, company, connection, recipients, priority="low", campaign_id=campaign)
    configure(fake_meta, forced_errors=[131026])
    # When their jobs run
    enqueue(broker, ids, tier="low")
    drain(broker, worker)
    # Then the campaign counts two sent and one failed (not sent: Meta never accepted it)
    rows = messages(db, ids)
    assert sorted(r.status for r in rows) == [MessageStatus.FAILED, MessageStatus.SENT, MessageStatus.SENT]
    [failed] = [r for r in rows if r.status == MessageStatus.FAILED]
    assert (failed.error_code, failed.sent_at) == (131026, None)
    assert campaign_counters(db, campaign) == {"sent": 2, "failed": 1}


def test_the_scheduler_sweep_releases_ended_and_expired_holds_without_a_sender(
    db: Database, broker: Any, settings: Settings
) -> None:
    # Given sends parked under an inactive connection (one normal, one campaign-tier), and one whose deadline
    # has passed, with no sender process polling
    company, connection = make_connection(db)
    execute(db, "UPDATE connections SET status = 'inactive' WHERE id = :id", id=connection)
    normal, low, expired = make_messages(db, company, connection, ["16505550001", "16505550002", "16505550003"])
    holds = Holds(settings.redis_namespace)
    hold = f"connection:{connection}"

    async def park() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            far, past = time.time() + 3600, time.time() - 1
            await holds.park_async(client, hold, send_job(normal, "normal"), company_id=company, deadline=far)
            await holds.park_async(client, hold, send_job(low, "low"), company_id=company, deadline=far)
            await holds.park_async(client, hold, send_job(expired, "normal"), company_id=company, deadline=past)
        finally:
            await client.aclose()

    asyncio.run(park())
    ns, lanes = settings.redis_namespace, Lanes(settings.redis_namespace)
    # When the sweep runs while the connection is still inactive
    with db.session() as session:
        released = release_ended(session, broker.client, holds)
    # Then only the expired one went back to its queue (the sender will fail it)
    assert released == 1 and queue_length(broker.client, ns, contracts.MESSAGES) == 1
    assert holds.counts(broker.client) == {hold: 2}
    # When the connection is active again and the sweep runs
    execute(db, "UPDATE connections SET status = 'active' WHERE id = :id", id=connection)
    with db.session() as session:
        released = release_ended(session, broker.client, holds)
    # Then the others are released: the normal one to its queue, the campaign-tier one to its company's lane
    assert released == 2 and holds.counts(broker.client) == {}
    assert queue_length(broker.client, ns, contracts.MESSAGES) == 2
    assert lanes.backlog(broker.client) == 1 and lanes.feed(broker.client) == 1
    assert queue_length(broker.client, ns, contracts.MESSAGES_LOW) == 1
