"""Actors of the webhook-ingest service (queue ``webhooks``)."""

from __future__ import annotations

import dramatiq

from libs import contracts
from libs.errors import Defer
from libs.ingest import process
from services.webhook_ingest import resources


@dramatiq.actor(
    actor_name=contracts.PROCESS_WEBHOOK.actor_name,
    queue_name=contracts.PROCESS_WEBHOOK.queue_name,
    time_limit=60_000,
    throws=(Defer,),
)
def process_webhook(webhook_id: int) -> None:
    """Parse and apply one stored webhook."""
    process.process_webhook(resources.db, webhook_id)
