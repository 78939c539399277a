"""Actors of the campaign-runner (queue ``campaigns``: 2 attempts, fixed 5 s)."""

from __future__ import annotations

import dramatiq

from libs import contracts
from libs.campaigns.expand import expand_batch
from services.campaign_runner import broker, budget, lanes, resources


@dramatiq.actor(
    actor_name=contracts.EXPAND_CAMPAIGN_BATCH.actor_name,
    queue_name=contracts.EXPAND_CAMPAIGN_BATCH.queue_name,
    time_limit=300_000,
)
def expand_campaign_batch(campaign_id: int, first_recipient_id: int, last_recipient_id: int) -> None:
    """Create one slice's message rows and enqueue their low-tier sends (those beyond the tier budget wait)."""
    batch = contracts.ExpandCampaignBatch(campaign_id, first_recipient_id, last_recipient_id)
    expand_batch(resources.db, broker.client, lanes, batch, budget)
