"""Scheduled starts happen exactly once even with two schedulers; finished campaigns are closed."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import text

from libs import contracts
from libs.campaigns.actions import complete_campaigns, start_due_campaigns
from libs.db.engine import Database
from libs.settings import Settings
from tests.campaigns.test_expand import make_campaign
from tests.helpers import queue_length


def schedule(db: Database, campaign_id: int, when: str) -> None:
    with db.session() as session:
        session.execute(
            text(
                f"UPDATE campaigns SET status = 'scheduled', start_at = now() {when}, "
                "recipients_count = (SELECT count(*) FROM campaign_recipients WHERE campaign_id = :c) "
                "WHERE id = :c"
            ),
            {"c": campaign_id},
        )


def status(db: Database, campaign_id: int) -> str:
    with db.session() as session:
        return str(session.execute(text("SELECT status FROM campaigns WHERE id = :c"), {"c": campaign_id}).scalar_one())


def test_due_campaign_starts_once_with_two_schedulers(db: Database, broker: Any, settings: Settings) -> None:
    due, _, _ = make_campaign(db, 2_500)
    schedule(db, due, "- interval '1 minute'")
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def tick() -> None:
        barrier.wait()
        results.append(start_due_campaigns(db, broker.client, settings.redis_namespace))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], [], [due]]
    assert status(db, due) == "running"
    assert queue_length(broker.client, settings.redis_namespace, contracts.CAMPAIGNS) == 3  # 2,500 / 1,000


def test_future_campaign_waits(db: Database, broker: Any, settings: Settings) -> None:
    later, _, _ = make_campaign(db, 10)
    schedule(db, later, "+ interval '1 hour'")
    assert start_due_campaigns(db, broker.client, settings.redis_namespace) == []
    assert status(db, later) == "scheduled"


def test_campaign_completes_when_every_message_is_final(db: Database, broker: Any, settings: Settings) -> None:
    campaign_id, first, last = make_campaign(db, 3)
    from libs.campaigns.expand import expand_batch
    from libs.campaigns.lanes import Lanes

    with db.session() as session:
        session.execute(text("UPDATE campaigns SET recipients_count = 3 WHERE id = :c"), {"c": campaign_id})
    expand_batch(
        db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign_id, first, last)
    )
    assert complete_campaigns(db) == []  # three sends still queued
    with db.session() as session:
        session.execute(text("UPDATE messages SET status = 'sent' WHERE campaign_id = :c"), {"c": campaign_id})
    assert complete_campaigns(db) == [campaign_id]
    assert status(db, campaign_id) == "completed"
