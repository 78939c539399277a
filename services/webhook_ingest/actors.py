"""Actors of the webhook-ingest service (queue ``webhooks``: 3 attempts, exponential from 2 s)."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.enqueue import enqueue_many
from libs.errors import PermanentError
from libs.ingest import metrics, process
from libs.middleware.retry import is_final_attempt
from services.webhook_ingest import broker, resources, settings


@dramatiq.actor(
    actor_name=contracts.PROCESS_WEBHOOK.actor_name,
    queue_name=contracts.PROCESS_WEBHOOK.queue_name,
    time_limit=60_000,
)
def process_webhook(webhook_id: int) -> None:
    """Parse and apply one stored webhook; on its last failure the row is marked failed."""
    try:
        outcome = process.process_webhook(resources.db, webhook_id)
    except Exception as exc:
        if isinstance(exc, PermanentError) or is_final_attempt(broker, CurrentMessage.get_current_message()):
            process.mark_failed(resources.db, webhook_id, f"{type(exc).__name__}: {exc}")
        raise
    if outcome is not None:
        metrics.record(broker.client, settings.redis_namespace, [outcome.received])
        _fetch_media(outcome.media)


@dramatiq.actor(
    actor_name=contracts.PROCESS_WEBHOOKS.actor_name,
    queue_name=contracts.PROCESS_WEBHOOKS.queue_name,
    time_limit=120_000,
)
def process_webhooks(webhook_ids: list[int]) -> None:
    """Apply a group of stored webhooks in one transaction; if it fails, each goes on as its own job."""
    outcomes = process.process_group(resources.db, webhook_ids, _process_each)
    metrics.record(broker.client, settings.redis_namespace, [outcome.received for outcome in outcomes])
    _fetch_media([m for outcome in outcomes for m in outcome.media])


def _fetch_media(message_ids: list[int]) -> None:
    """One ``media`` job per inbound media message just stored (the media fetcher downloads its file)."""
    if message_ids:
        jobs = (contracts.FETCH_MEDIA.message(contracts.FetchMedia(m)) for m in message_ids)
        enqueue_many(broker.client, settings.redis_namespace, jobs)


def _process_each(webhook_ids: list[int]) -> None:
    singles = (contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in webhook_ids)
    enqueue_many(broker.client, settings.redis_namespace, singles)
