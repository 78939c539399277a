"""Fairness: two companies' campaigns share the sender round-robin, whoever started first and however big."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from sqlalchemy import select

from libs import contracts
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import LaneFeeder, Lanes
from libs.db.engine import Database
from libs.db.models import Message
from libs.settings import Settings
from tests.campaigns.test_expand import make_campaign
from tests.sending.conftest import Outcomes, configure

#: Sends per campaign; the first company's is twice the second's and starts first.
BIG, SMALL = 400, 200


def test_a_later_campaign_gets_half_the_sends_at_once(
    db: Database,
    broker: Any,
    settings: Settings,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the running sender's lane feeder keeping 20 sends in messages.low, 5 per company per turn
    [feeder] = [m for m in broker.middleware if isinstance(m, LaneFeeder)]
    lanes = Lanes(settings.redis_namespace, buffer=20, quantum=5)
    monkeypatch.setattr(feeder, "lanes", lanes)
    # And company A's campaign of 400 fanned out first, then company B's of 200 (connections at 1,000/s that
    # Meta does not throttle, so the sender, not a per-number limit, is what they share)
    configure(fake_meta, rate_per_second=5_000)
    big, big_first, big_last = make_campaign(db, BIG, rate=1_000, phone_number_id="111")
    small, small_first, small_last = make_campaign(db, SMALL, rate=1_000, phone_number_id="222")
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(big, big_first, big_last))
    expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(small, small_first, small_last))
    # When every send is done
    outcomes.wait(lambda o: sum(1 for a in o.attempts if a.exception is None) >= BIG + SMALL, timeout=60)
    with db.session() as session:
        campaign_of = dict(session.execute(select(Message.id, Message.campaign_id)).tuples().all())
    order = [campaign_of[a.message_id] for a in outcomes.attempts if a.exception is None]
    # Then each message was sent once
    assert sorted(order) == sorted([big] * BIG + [small] * SMALL)
    # And B did not wait for A's backlog: from the start, B had half of every 100 sends until it ran dry
    last_small = max(i for i, campaign in enumerate(order) if campaign == small)
    assert last_small < 2 * SMALL + 60, last_small  # FIFO would put it at 599
    contended = order[: 2 * SMALL]
    shares = [contended[i : i + 100].count(small) / 100 for i in range(0, len(contended), 100)]
    assert all(0.35 <= share <= 0.65 for share in shares), shares
