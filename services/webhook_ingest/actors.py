"""Actors of the webhook-ingest service (queue ``webhooks``: 3 attempts, exponential from 2 s)."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.enqueue import enqueue_many
from libs.errors import DependencyUnavailableError, PermanentError
from libs.ingest import process
from libs.middleware.retry import is_final_attempt
from services.webhook_ingest import broker, resources, settings

logger = logging.getLogger(__name__)


def _announce(events: list[contracts.InboundMessageEvent]) -> None:
    enqueue_many(broker.client, settings.redis_namespace, (contracts.INBOUND_MESSAGE.message(e) for e in events))


@dramatiq.actor(
    actor_name=contracts.PROCESS_WEBHOOK.actor_name,
    queue_name=contracts.PROCESS_WEBHOOK.queue_name,
    time_limit=60_000,
)
def process_webhook(webhook_id: int) -> None:
    """Parse and apply one stored webhook; on its last failure the row is marked failed."""
    try:
        process.process_webhook(resources.db, webhook_id, _announce)
    except Exception as exc:
        if isinstance(exc, PermanentError) or is_final_attempt(broker, CurrentMessage.get_current_message()):
            process.mark_failed(resources.db, webhook_id, f"{type(exc).__name__}: {exc}")
        raise


@dramatiq.actor(
    actor_name=contracts.PROCESS_WEBHOOKS.actor_name,
    queue_name=contracts.PROCESS_WEBHOOKS.queue_name,
    time_limit=120_000,
)
def process_webhooks(webhook_ids: list[int]) -> None:
    """Apply a group of stored webhooks in one transaction; if the group fails, each goes on as its own job.

    A Postgres outage fails the group as a whole (deferred, retried later); any other error — a webhook that
    cannot be parsed or applied — hands every webhook of the group to a ``process_webhook`` job of its own,
    which retries or dead-letters it alone. Nothing of the group was applied then (one transaction).
    """
    try:
        process.process_webhooks(resources.db, webhook_ids, _announce)
    except DependencyUnavailableError:
        raise
    except Exception as exc:
        logger.info("group of %d webhooks failed (%s): processing them one by one", len(webhook_ids), exc)
        singles = (contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in webhook_ids)
        enqueue_many(broker.client, settings.redis_namespace, singles)
