"""Campaign fan-out under Meta's messaging limit: sends beyond the portfolio's budget wait, and go when the rolling
24 h window frees room (issue 18, item 4). The clock is moved with the budget's test clock, not waited for."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from libs import contracts
from libs.campaigns import actions
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.rules import tiers
from libs.rules.budget import Budget, TestClockDisabledError, digest
from libs.rules.limits import tier_limit
from libs.settings import Settings
from tests.campaigns.test_expand import make_campaign
from tests.helpers import low_tier_waiting

DAY_S = 86_400


def connection_of(db: Database, campaign_id: int) -> int:
    with db.session() as session:
        return int(
            session.execute(text("SELECT connection_id FROM campaigns WHERE id = :c"), {"c": campaign_id}).one()[0]
        )


def set_connection(db: Database, connection_id: int, **values: Any) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    with db.session() as session:
        session.execute(text(f"UPDATE connections SET {assignments} WHERE id = :id"), {"id": connection_id, **values})


def waiting(broker: Any, settings: Settings, campaign_id: int) -> dict[str, Any] | None:
    """What ``GET /api/campaigns/{id}`` shows as ``budget`` (run on a private event loop)."""
    import asyncio

    from libs.redis_clients import async_redis_client

    async def read() -> dict[str, Any] | None:
        client = async_redis_client(settings)
        try:
            return await actions.waiting_for_budget(client, settings.redis_namespace, campaign_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


@pytest.fixture
def budget(settings: Settings) -> Budget:
    return Budget.from_settings(settings)


def test_sends_beyond_the_limit_wait_until_the_window_frees_room(
    db: Database, broker: Any, settings: Settings, budget: Budget
) -> None:
    # Given a campaign of 1,500 on a number whose portfolio may reach 1,000 new people per 24 h
    campaign_id, first, last = make_campaign(db, 1_500)
    set_connection(db, connection_of(db, campaign_id), messaging_tier="TIER_1K")
    lanes = Lanes(settings.redis_namespace)
    # When it fans out (one slice, then the same slice delivered again)
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(campaign_id, first, last), budget)
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(campaign_id, first, last), budget)
    # Then 1,000 sends are queued (the repeat's duplicates are claimed once) and 500 wait for budget — none twice —
    # with the time room frees up
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 2_000
    shown = waiting(broker, settings, campaign_id)
    assert shown is not None and shown["state"] == "waiting for tier budget" and shown["waiting"] == 500
    frees_at = dt.datetime.fromisoformat(shown["frees_at"])
    assert dt.timedelta(hours=23) < frees_at - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24, seconds=5)
    # And a release now moves nothing: the window is full
    assert budget.release(broker.client, lanes) == 0
    # When 24 h pass (the test clock) and the budget is released
    budget.advance_test_clock(broker.client, DAY_S + 1)
    assert budget.release(broker.client, lanes) == 500
    # Then the 500 are queued too, nothing waits any more, and each recipient was counted once
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 2_500
    assert broker.client.hlen(budget.names.waiting_rows) == broker.client.hlen(budget.names.entries) == 0
    assert waiting(broker, settings, campaign_id) is None
    assert budget.reached(broker.client, "c-" + str(connection_of(db, campaign_id)))[0] == 500


def test_a_recipient_reached_by_another_campaign_of_the_portfolio_costs_nothing(
    db: Database, broker: Any, settings: Settings, budget: Budget
) -> None:
    # Given two numbers of one portfolio limited to 1,000, each with a campaign to the same 800 people
    first_campaign, a_first, a_last = make_campaign(db, 800, phone_number_id="111")
    second_campaign, b_first, b_last = make_campaign(db, 800, phone_number_id="222")
    for campaign_id in (first_campaign, second_campaign):
        set_connection(db, connection_of(db, campaign_id), portfolio_id="portfolio-1", messaging_limit=1_000)
    lanes = Lanes(settings.redis_namespace)
    # When both fan out, the first twice (an at-least-once redelivery)
    batch = contracts.ExpandCampaignBatch(first_campaign, a_first, a_last)
    expand_batch(db, broker.client, lanes, batch, budget)
    expand_batch(db, broker.client, lanes, batch, budget)
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(second_campaign, b_first, b_last), budget)
    # Then every send is queued (800 people counted once: 200 left), none waits
    assert budget.reached(broker.client, "p-portfolio-1")[0] == 800
    assert waiting(broker, settings, second_campaign) is None
    assert low_tier_waiting(broker.client, settings.redis_namespace) >= 1_600


def test_recipients_inside_their_service_window_are_not_counted(
    db: Database, broker: Any, settings: Settings, budget: Budget
) -> None:
    # Given a campaign of 10 on a number limited to 5, where 6 of the recipients wrote within the last day
    campaign_id, first, last = make_campaign(db, 10)
    connection_id = connection_of(db, campaign_id)
    set_connection(db, connection_id, messaging_limit=5)
    with db.session() as session:
        session.execute(
            text(
                "INSERT INTO service_windows (connection_id, wa_id, last_inbound_at) "
                "SELECT :c, (5511900000000 + g)::text, now() - interval '1 hour' FROM generate_series(1, 6) g"
            ),
            {"c": connection_id},
        )
    # When it fans out
    expand_batch(
        db,
        broker.client,
        Lanes(settings.redis_namespace),
        contracts.ExpandCampaignBatch(campaign_id, first, last),
        budget,
    )
    # Then all 10 are queued: the 6 are replies (not business-initiated), the other 4 fit in the limit
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 10
    assert budget.reached(broker.client, f"c-{connection_id}")[0] == 4


def test_start_warns_when_the_recipients_exceed_what_is_left(
    db: Database, broker: Any, settings: Settings, budget: Budget
) -> None:
    # Given a portfolio limited to 1,000 that already reached 400 people, and a campaign of 1,500
    campaign_id, *_ = make_campaign(db, 1_500)
    connection_id = connection_of(db, campaign_id)
    set_connection(db, connection_id, messaging_limit=1_000)
    with db.session() as session:
        session.execute(text("UPDATE campaigns SET recipients_count = 1500 WHERE id = :c"), {"c": campaign_id})
    names = budget.names
    broker.client.zadd(
        names.reached(f"c-{connection_id}"), {digest(f"+1555{i:07d}"): budget.now_ms(broker.client) for i in range(400)}
    )
    # When its start is checked
    [warning] = actions.tier_budget_warnings(db, broker.client, budget, campaign_id)
    # Then it warns (not refuses): 600 left, the rest at the limit's pace — done within the next two days
    assert warning["code"] == "tier_budget" and warning["remaining"] == 600 and warning["limit"] == 1_000
    finishes = dt.datetime.fromisoformat(warning["finishes_at"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23) < finishes <= dt.timedelta(hours=24, seconds=5), finishes
    assert "wait for tier budget" in warning["message"]
    # And a campaign that fits gets no warning
    set_connection(db, connection_id, messaging_limit=None, messaging_tier="TIER_UNLIMITED")
    assert actions.tier_budget_warnings(db, broker.client, budget, campaign_id) == []


def test_tiers_as_meta_spells_them() -> None:
    assert [tier_limit(t) for t in ("TIER_250", "TIER_1K", "TIER_2K", "TIER_100K", "TIER_UNLIMITED")] == [
        250,
        1_000,
        2_000,
        100_000,
        -1,
    ]
    assert tier_limit("TIER_NOT_SET") is None and tier_limit(None) is None and tier_limit(2_000) == 2_000


def test_the_test_clock_is_refused_when_off(broker: Any, settings: Settings) -> None:
    with pytest.raises(TestClockDisabledError):
        Budget(settings.redis_namespace).advance_test_clock(broker.client, DAY_S)


def test_a_raised_limit_frees_waiting_sends_at_the_next_refresh(
    db: Database, broker: Any, settings: Settings, budget: Budget
) -> None:
    # Given a campaign of 30 on a number limited to 10: 20 wait
    campaign_id, first, last = make_campaign(db, 30)
    connection_id = connection_of(db, campaign_id)
    set_connection(db, connection_id, messaging_limit=10)
    lanes = Lanes(settings.redis_namespace)
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(campaign_id, first, last), budget)
    assert budget.release(broker.client, lanes) == 0
    # When the operator raises the override to 25 and the scheduler refreshes the limits
    set_connection(db, connection_id, messaging_limit=25)
    assert tiers.refresh_limits(db, broker.client, budget) == {f"c-{connection_id}": 25}
    # Then 15 more go; 5 still wait
    assert budget.release(broker.client, lanes) == 15
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 25
    assert broker.client.llen(budget.names.wait(campaign_id)) == 5
