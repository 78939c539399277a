"""A campaign under Meta's messaging limit, end to end (issue 18, item 4): the fan-out sends what the portfolio's
budget allows, the rest waits, and the running senders send it once the rolling 24 h window frees room — the
window moved by the budget's test clock, the sends counted at the fake Meta."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from sqlalchemy import text

from libs import contracts
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import LaneFeeder, Lanes
from libs.db.engine import Database
from libs.rules.budget import Budget
from libs.settings import Settings
from tests.campaigns.test_expand import make_campaign
from tests.sending.conftest import Outcomes, configure, sends

RECIPIENTS, LIMIT = 1_500, 1_000


def test_a_campaign_over_the_limit_sends_the_limit_then_the_rest_when_room_frees(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a campaign of 1,500 on a number whose portfolio Meta limits to 1,000 new people per 24 h
    configure(fake_meta, rate_per_second=10_000, webhook_statuses=[])
    campaign_id, first, last = make_campaign(db, RECIPIENTS, rate=1_000)
    with db.session() as session:
        session.execute(
            text(
                "UPDATE connections SET messaging_tier = 'TIER_1K' "
                "WHERE id = (SELECT connection_id FROM campaigns WHERE id = :c)"
            ),
            {"c": campaign_id},
        )
    [feeder] = [m for m in broker.middleware if isinstance(m, LaneFeeder)]
    lanes = feeder.lanes
    budget = Budget.from_settings(settings)
    # When it fans out (as the campaign runner does) and the senders send what they may
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(campaign_id, first, last), budget)
    outcomes.wait(lambda o: sum(1 for a in o.attempts if a.exception is None) >= LIMIT, timeout=60)
    # Then Meta got exactly 1,000 and 500 wait for tier budget (the senders' release poll moves none)
    assert len(sends(fake_meta)) == LIMIT
    assert broker.client.llen(budget.names.wait(campaign_id)) == RECIPIENTS - LIMIT
    assert budget.release(broker.client, lanes) == 0
    # When 24 h pass on the budget's clock
    budget.advance_test_clock(broker.client, 86_400 + 1)
    # Then the running senders release the 500 and Meta gets them: 1,500 distinct recipients, each once
    outcomes.wait(lambda o: sum(1 for a in o.attempts if a.exception is None) >= RECIPIENTS, timeout=60)
    accepted = sends(fake_meta)
    assert len(accepted) == RECIPIENTS == len({s["to"] for s in accepted})
    assert broker.client.llen(budget.names.wait(campaign_id)) == 0
    assert Lanes(settings.redis_namespace).backlog(broker.client) == 0
