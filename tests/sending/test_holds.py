"""Sends held by the state of their connection or campaign: deferred (no attempt), released when it changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from starlette.testclient import TestClient

from libs.campaigns.lanes import Lanes
from libs.campaigns.schedule import unpark_campaigns
from libs.db.engine import Database
from libs.db.models import CampaignStatus, ConnectionStatus, MessageStatus
from libs.ingest.edge import create_app
from libs.settings import Settings
from tests.fakes.evolution import DEFAULT_INSTANCE
from tests.helpers import drain
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


def test_inactive_connection_holds_sends_until_it_is_active_again(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given an inactive connection with three messages to send
    company, connection = make_connection(db)
    execute(db, "UPDATE connections SET status = 'inactive' WHERE id = :id", id=connection)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002", "16505550003"])
    # When their jobs run
    enqueue(broker, ids)
    for message_id in ids:
        outcomes.wait_deferred(message_id, "connection inactive", count=2)
    # Then they are held: deferred again and again, never tried, never failed
    assert sends(fake_meta) == []
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.QUEUED, 0)}
    # When the connection is reactivated
    execute(db, "UPDATE connections SET status = 'active' WHERE id = :id", id=connection)
    drain(broker, worker)
    # Then they go out, one attempt each
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    assert {(r.status, r.attempts) for r in messages(db, ids)} == {(MessageStatus.SENT, 1)}
    assert not [a for a in outcomes.attempts if a.failed] and dead_letters(db) == []


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
    outcomes.wait_deferred(second, "connection inactive")
    assert [s["number"] for s in sends(fake_evolution)] == ["5511999999901"]
    assert message(db, second).status == MessageStatus.QUEUED
    # When the session opens again, the held message goes out
    connection_update("open", when="2025-10-21T12:05:00.000Z")
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


def test_normal_tier_message_of_a_paused_campaign_is_deferred(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Parking is for campaign (low-tier) traffic; anything else waits by deferral as before
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.PAUSED)
    [message_id] = make_messages(db, company, connection, ["16505550001"], campaign_id=campaign)
    enqueue(broker, [message_id])
    outcomes.wait_deferred(message_id, "campaign paused")
    execute(db, "UPDATE campaigns SET status = 'running' WHERE id = :id", id=campaign)
    drain(broker, worker)
    assert [int(s["client_ref"]) for s in sends(fake_meta)] == [message_id]


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
