"""Campaign fan-out skips numbers on the company's opt-out list (issue 18, item 2)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from libs import contracts
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import Campaign, Event, Message
from libs.settings import Settings
from tests.campaigns.test_expand import make_campaign
from tests.helpers import low_tier_waiting


def opt_out(db: Database, campaign_id: int, phones: list[str]) -> None:
    with db.session() as session:
        company = session.get(Campaign, campaign_id).company_id  # type: ignore[union-attr]
        session.execute(
            text("INSERT INTO opt_outs (company_id, phone, source) SELECT :c, unnest(CAST(:p AS text[])), 'api'"),
            {"c": company, "p": phones},
        )


def test_suppressed_numbers_are_skipped_and_counted_once(db: Database, broker: Any, settings: Settings) -> None:
    # Given a campaign of 10 recipients, 3 of them on the company's opt-out list (and one number of another
    # company's list, which does not count here)
    campaign_id, first, last = make_campaign(db, 10)
    opted_out = ["5511900000002", "5511900000005", "5511900000009"]
    opt_out(db, campaign_id, opted_out)
    other, *_ = make_campaign(db, 1, phone_number_id="999000111")
    opt_out(db, other, ["5511900000001"])
    lanes = Lanes(settings.redis_namespace)
    batch = contracts.ExpandCampaignBatch(campaign_id, first, last)
    # When it fans out
    assert expand_batch(db, broker.client, lanes, batch) == 7
    # Then 7 sends were queued
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 7
    # When the batch is redelivered, nothing new is created
    assert expand_batch(db, broker.client, lanes, batch) == 0
    # Then the 3 suppressed rows are cancelled with the reason, and counted once
    with db.session() as session:
        rows = session.execute(select(Message).where(Message.campaign_id == campaign_id)).scalars().all()
        skipped = sorted(r.recipient for r in rows if r.status == "cancelled")
        assert skipped == opted_out
        assert {r.failure_reason for r in rows if r.status == "cancelled"} == {"opted_out"}
        assert sum(1 for r in rows if r.status == "queued") == 7
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert (campaign.suppressed_count, campaign.queued_count, campaign.recipients_count) == (3, 10, 0)
        # And no message.created event announces a message that will never be sent
        created = session.execute(select(Event).where(Event.type == "message.created")).scalars().all()
        announced = {e.data["contact"]["wa_id"] for e in created if e.data.get("campaign_id") == campaign_id}
        assert announced.isdisjoint(opted_out) and len(announced) == 7
