"""The dead-letter recorder and periodic maintenance actors."""

from __future__ import annotations

from typing import Any

import dramatiq
import httpx
from periodiq import cron

from libs import contracts
from libs.campaigns import actions as campaigns
from libs.campaigns.lanes import Lanes
from libs.campaigns.sweep import sweep_expansions
from libs.deadletters import actions as dead_letters
from libs.deadletters import alerts
from libs.events import maintenance as events
from libs.ingest import unmatched
from libs.ingest.sweep import sweep_webhooks as sweep
from libs.media import actions as media
from libs.media import fetch as media_fetch
from libs.media.storage import storage_from_settings
from libs.rules import tiers
from libs.rules.budget import Budget
from libs.secrets import Secrets
from libs.sending import holds
from libs.sending.sweep import sweep_sends as sweep_send_jobs
from libs.templates import actions as templates
from libs.templates.graph import Graph, graph_client
from services.scheduler import broker, resources, settings

#: An inbound media message still without its file after this long lost its job (retries end within ~10 min).
MEDIA_SWEEP_GRACE_S = 1_800
#: The Graph API reads of the hourly refresh: fail fast, never hang the maintenance queue.
GRAPH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dramatiq.actor(
    actor_name=contracts.RECORD_DEAD_LETTER.actor_name,
    queue_name=contracts.RECORD_DEAD_LETTER.queue_name,
    time_limit=30_000,
)
def record_dead_letter(
    message: dict[str, Any],
    reason: str,
    error_type: str,
    error_message: str,
    traceback: str | None,
    attempts: int,
    first_failed_at: float | None,
    last_failed_at: float,
) -> None:
    """Write a dead letter to the ledger (retried until Postgres is back), then report it once."""
    entry = contracts.RecordDeadLetter(
        message=message,
        reason=reason,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        attempts=attempts,
        first_failed_at=first_failed_at,
        last_failed_at=last_failed_at,
    )
    if dead_letters.record(resources.db, entry):
        alerts.report_dead_letter(entry)
        alerts.check_threshold(
            broker.client,
            settings.redis_namespace,
            entry,
            threshold=settings.alert_dead_letter_threshold,
            window_minutes=settings.alert_window_minutes,
        )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def sweep_webhooks() -> None:
    """Every minute: enqueue webhooks stored but not enqueued (the outbox sweep), and webhooks kept for a number
    whose connection exists now."""
    sweep(
        resources.db,
        broker.client,
        settings.redis_namespace,
        older_than_seconds=settings.webhook_sweep_after_seconds,
    )
    unmatched.sweep_kept(
        resources.db,
        broker.client,
        settings.redis_namespace,
        older_than_seconds=settings.webhook_sweep_after_seconds,
    )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def sweep_sends() -> None:
    """Every minute: enqueue again the sends whose job Redis no longer holds (``libs.sending.sweep``)."""
    sweep_send_jobs(
        resources.db,
        broker.client,
        settings.redis_namespace,
        Lanes(settings.redis_namespace, buffer=settings.campaign_feed_buffer),
        grace_seconds=settings.outbox_sweep_after_seconds,
        confirm_after=settings.outbox_sweep_confirm_seconds,
    )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def sweep_campaigns() -> None:
    """Every minute: enqueue again the expansion of started campaigns left without one (``libs.campaigns.sweep``)."""
    sweep_expansions(
        resources.db,
        broker.client,
        settings.redis_namespace,
        grace_seconds=settings.outbox_sweep_after_seconds,
        confirm_after=settings.outbox_sweep_confirm_seconds,
    )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("17 3 * * *"), time_limit=600_000)
def prune_dead_letters() -> None:
    """Daily: drop ledger rows older than the retention period (90 days by default)."""
    dead_letters.prune(resources.db, settings.dead_letter_retention_days)


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def start_due_campaigns() -> None:
    """Every minute: start scheduled campaigns that are due (exactly once, even with two schedulers)."""
    campaigns.start_due_campaigns(resources.db, broker.client, settings.redis_namespace)


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def finish_campaigns() -> None:
    """Every minute: close running campaigns whose messages are all final."""
    campaigns.complete_campaigns(resources.db)


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def unpark_campaigns() -> None:
    """Every minute: release the parked sends of campaigns no longer paused (if a resume's own unpark failed),
    and campaign sends waiting for tier budget as room freed up (the senders do this every second)."""
    lanes = Lanes(settings.redis_namespace, buffer=settings.campaign_feed_buffer)
    campaigns.unpark_campaigns(resources.db, broker.client, lanes)
    budget = Budget.from_settings(settings)
    tiers.refresh_limits(resources.db, broker.client, budget)  # a changed tier or override frees waiting sends
    budget.release(broker.client, lanes)


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("17 * * * *"), time_limit=300_000)
def refresh_meta_fields() -> None:
    """Every hour: each Meta number's messaging-limit tier, quality rating and throughput from the Graph API (a
    number newly RED or downgraded pauses its campaigns, as the quality webhook does)."""
    with httpx.Client(timeout=GRAPH_TIMEOUT) as http:
        tiers.refresh_from_meta(
            resources.db,
            http,
            graph_url=settings.meta_graph_url,
            api_version=settings.meta_api_version,
            secrets=Secrets(settings.secrets_key_list),
        )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def release_holds() -> None:
    """Every minute: release held sends whose hold ended or that outlived the maximum age (the senders do
    this every second; this covers a time when none runs)."""
    with resources.db.session() as session:
        holds.release_ended(session, broker.client, holds.Holds(settings.redis_namespace))


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("* * * * *"), time_limit=120_000)
def sweep_event_deliveries() -> None:
    """Every minute: wake the endpoints with due event deliveries, schedule the others' next wake-up (whatever
    Redis lost)."""
    events.sweep_deliveries(
        resources.db,
        broker.client,
        settings.redis_namespace,
        lambda message, delay: broker.enqueue(message, delay=delay),
    )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("41 3 * * *"), time_limit=600_000)
def prune_events() -> None:
    """Daily: drop delivered events older than the retention period (30 days by default)."""
    events.prune_events(resources.db, settings.event_retention_days)


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("*/5 * * * *"), time_limit=600_000)
def sync_templates() -> None:
    """Every 5 minutes: sync the template catalogue of each active Meta connection (with a ``waba_id``) not
    synced for ``ZAPQ_TEMPLATE_SYNC_SECONDS`` (an hour), a new one at once (``libs.templates.actions``)."""
    graph = Graph(settings.meta_graph_url, settings.meta_api_version)
    with graph_client() as http:
        templates.sync_due(
            resources.db, http, graph, Secrets(settings.secrets_key_list), max_age_s=settings.template_sync_seconds
        )


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("29 3 * * *"), time_limit=3_600_000)
def prune_media() -> None:
    """Daily: delete stored media (uploads and inbound files) past their retention (90 days by default)."""
    storage = storage_from_settings(settings)
    try:
        media.prune(resources.db, storage)
    finally:
        storage.close()


@dramatiq.actor(queue_name=contracts.MAINTENANCE, periodic=cron("*/5 * * * *"), time_limit=120_000)
def sweep_media() -> None:
    """Every 5 minutes: enqueue again the fetch of inbound media left without their file for 30 minutes (a job
    lost between the ingest commit and its enqueue); those given up are left alone."""
    media_fetch.sweep(resources.db, broker.client, settings.redis_namespace, grace_seconds=MEDIA_SWEEP_GRACE_S)
