"""Quality signals (issue 18, item 5): Meta flags a number, its running campaigns pause with the reason, Sentry
hears of it, and direct messages from that number still go out.

The fake Meta posts a signed ``phone_number_quality_update`` to a real webhook-ingest edge; a real worker
ingests it and sends; the real Sentry SDK reports to the fake Sentry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import httpx
import pytest
from sqlalchemy import select, text

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, Connection, Event, MessageStatus
from libs.ingest.edge import create_app
from libs.observability import init_sentry
from libs.rules import tiers
from libs.secrets import Secrets
from libs.settings import Settings
from libs.whatsapp.meta_account import parse_account_updates
from tests.fakes.meta_quality import capability_webhook
from tests.fakes.sentry import SentryRecorder, running_sentry
from tests.fakes.server import running_app
from tests.helpers import drain
from tests.observability.support import flush, reset_sentry
from tests.sending.conftest import configure, make_campaign, make_connection, make_messages, message, sends

DEADLINE_S = 15.0
FLAGGED_NUMBER, FLAGGED_DISPLAY = "106540352242922", "15550783881"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE_S} s: {what}")
        time.sleep(0.05)


def campaign_row(db: Database, campaign_id: int) -> Campaign:
    with db.session() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.fixture
def sentry(settings: Settings) -> Iterator[SentryRecorder]:
    """The real SDK reporting to a fake Sentry for this test."""
    with running_sentry() as (dsn, recorder):
        assert init_sentry(settings.model_copy(update={"sentry_dsn": dsn}), service="quality-tests")
        try:
            yield recorder
        finally:
            reset_sentry()


@pytest.fixture
def edge_url(settings: Settings, db: Database, broker: Any) -> Iterator[str]:
    """The webhook-ingest edge on a real port (the fake Meta posts to it)."""
    with running_app(create_app(settings)) as url:
        yield url


def test_quality_red_pauses_that_numbers_campaigns_and_direct_messages_continue(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    sentry: SentryRecorder,
    edge_url: str,
) -> None:
    # Given two numbers, each with a running campaign, and Meta posting its webhooks to zapq
    company, flagged = make_connection(db, phone_number_id=FLAGGED_NUMBER)
    other_company, other = make_connection(db, phone_number_id="222333444")
    with db.session() as session:
        session.execute(
            text("UPDATE connections SET display_phone_number = :d, waba_id = '102290129340398' WHERE id = :id"),
            {"d": "+1 555-078-3881", "id": flagged},
        )
        session.execute(
            text("UPDATE connections SET display_phone_number = '15550009999' WHERE id = :id"), {"id": other}
        )
    flagged_campaign = make_campaign(db, company, flagged, CampaignStatus.RUNNING)
    other_campaign = make_campaign(db, other_company, other, CampaignStatus.RUNNING)
    configure(
        fake_meta,
        webhook_url=f"{edge_url}/webhooks/meta",
        app_secret=settings.meta_app_secret,
        display_phone_number=FLAGGED_DISPLAY,
        webhook_statuses=[],
    )
    # When Meta rates the first number RED and lowers its limit
    answer = httpx.post(
        f"{fake_meta}/_fake/quality",
        json={
            "phone_number_id": FLAGGED_NUMBER,
            "event": "DOWNGRADE",
            "quality_rating": "RED",
            "current_limit": "TIER_1K",
        },
    ).json()
    assert answer["delivered"] == 200
    # Then that number's campaign is paused with the reason, the other one keeps running
    wait_until(lambda: campaign_row(db, flagged_campaign).status == CampaignStatus.PAUSED, "the campaign paused")
    drain(broker, worker)
    paused = campaign_row(db, flagged_campaign)
    assert paused.status_reason is not None and "DOWNGRADE" in paused.status_reason
    assert campaign_row(db, other_campaign).status == CampaignStatus.RUNNING
    # And the number's fields say why, its status stays active
    with db.session() as session:
        row = session.get(Connection, flagged)
        assert row is not None
        assert (row.status, row.quality_rating, row.messaging_tier, row.quality_event) == (
            "active",
            "RED",
            "TIER_1K",
            "DOWNGRADE",
        )
        events = session.execute(select(Event).order_by(Event.id)).scalars().all()
        announced = [(e.type, e.data.get("status"), e.data.get("reason")) for e in events]
    assert ("campaign.status", "paused", paused.status_reason) in announced
    [attention] = [a for a in announced if a[0] == "connection.status"]
    assert attention[1] == "active" and "1 running campaign(s) paused" in (attention[2] or "")
    # And Sentry got one event naming the connection, not the number
    flush()
    [event] = sentry.wait_for_events(1)
    assert f"connection {flagged} flagged" in str(event)
    assert FLAGGED_DISPLAY not in str(event)
    # And a direct message from the flagged number is still sent
    [direct] = make_messages(db, company, flagged, ["5511988887777"])
    contracts.SEND_NORMAL.send(contracts.SendMessage(direct), broker=broker)
    drain(broker, worker)
    assert message(db, direct).status == MessageStatus.SENT
    assert [s["to"].lstrip("+") for s in sends(fake_meta)] == ["5511988887777"]


def test_an_unflagging_update_changes_fields_only_and_the_number_fields_are_served(
    db: Database, broker: Any, settings: Settings, sender: Any, fake_meta: str, worker: dramatiq.Worker, edge_url: str
) -> None:
    # Given a number with a running campaign
    company, connection = make_connection(db, phone_number_id=FLAGGED_NUMBER)
    with db.session() as session:
        session.execute(
            text("UPDATE connections SET display_phone_number = :d, waba_id = '102290129340398' WHERE id = :id"),
            {"d": FLAGGED_DISPLAY, "id": connection},
        )
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    configure(fake_meta, webhook_url=f"{edge_url}/webhooks/meta", app_secret=settings.meta_app_secret)
    # When Meta raises its throughput and then its whole portfolio's capability
    raised = {"phone_number_id": FLAGGED_NUMBER, "event": "THROUGHPUT_UPGRADE", "current_limit": "TIER_2K"}
    assert httpx.post(f"{fake_meta}/_fake/quality", json=raised).json()["delivered"] == 200
    capability = httpx.post(f"{fake_meta}/_fake/capability", json={"max_daily_conversations_per_business": 10_000})
    assert capability.json()["delivered"] == 200

    def tier() -> str | None:
        with db.session() as session:
            row = session.get(Connection, connection)
            return None if row is None else row.messaging_tier

    wait_until(lambda: tier() == "10000", "the capability update applied")
    # Then the campaign keeps running
    assert campaign_row(db, campaign).status == CampaignStatus.RUNNING
    # And the fake serves the number's fields as the Graph API does
    headers = {"authorization": "Bearer fake-meta-token"}
    fields = httpx.get(
        f"{fake_meta}/v21.0/{FLAGGED_NUMBER}",
        params={"fields": "whatsapp_business_manager_messaging_limit,quality_rating,throughput"},
        headers=headers,
    ).json()
    assert fields == {
        "whatsapp_business_manager_messaging_limit": "TIER_2K",
        "quality_rating": "GREEN",
        "throughput": {"level": "STANDARD"},
        "id": FLAGGED_NUMBER,
    }
    bad = httpx.get(f"{fake_meta}/v21.0/{FLAGGED_NUMBER}", params={"fields": "nope"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 100


def test_capability_updates_read_the_integer_limit() -> None:
    [update] = parse_account_updates(capability_webhook(waba_id="1", max_daily_conversations_per_business=2_000))
    assert (update.field, update.waba_id, update.current_limit) == ("business_capability_update", "1", "2000")


def test_the_graph_fields_are_read_and_a_newly_red_number_pauses_once(
    db: Database, broker: Any, settings: Settings, fake_meta: str
) -> None:
    # Given a number with a running campaign, which Meta now rates RED with a 250 limit (no webhook sent)
    company, connection = make_connection(db, phone_number_id=FLAGGED_NUMBER)
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    changed = {"phone_number_id": FLAGGED_NUMBER, "quality_rating": "RED", "current_limit": "TIER_250"}
    assert httpx.post(f"{fake_meta}/_fake/quality", json=changed).json()["delivered"] is None
    secrets = Secrets(settings.secrets_key_list)

    def refresh() -> list[dict[str, Any]]:
        with httpx.Client(timeout=5.0) as http:
            return tiers.refresh_from_meta(
                db, http, graph_url=fake_meta, api_version="v21.0", secrets=secrets, connection_id=connection
            )

    # When zapq reads the number's fields
    [result] = refresh()
    # Then it has Meta's values and the campaign is paused for it
    assert (result["messaging_tier"], result["quality_rating"], result["throughput_level"]) == (
        "TIER_250",
        "RED",
        "STANDARD",
    )
    assert result["flagged"] == "Meta quality rating RED"
    assert campaign_row(db, campaign).status == CampaignStatus.PAUSED
    # When the operator resumes it and the next hourly read still says RED
    with db.session() as session:
        session.execute(text("UPDATE campaigns SET status = 'running' WHERE id = :c"), {"c": campaign})
    [again] = refresh()
    # Then it is not paused again (only a change flags)
    assert again["flagged"] is None and campaign_row(db, campaign).status == CampaignStatus.RUNNING
    # And a bad token is reported per connection, not raised
    with db.session() as session:
        session.execute(
            text("UPDATE connections SET access_token = :t WHERE id = :id"),
            {"t": secrets.encrypt("wrong-token"), "id": connection},
        )
    [failed] = refresh()
    assert "error" in failed and "wrong-token" not in failed["error"]
