"""Outbox sweep of campaign expansion: a started campaign with recipients not expanded and no expansion job in
Redis gets the slices still to expand enqueued again.

A campaign is started by enqueueing one ``expand_campaign_batch`` job per slice of recipients; each creates its
slice's message rows in one transaction (all or none) and counts them in ``queued_count``. If Redis lost those
jobs, the campaign would stay ``running`` with ``queued_count < recipients_count`` and no one to expand it.

Every minute (``services.scheduler``): campaigns ``running`` or ``paused`` (a paused campaign is expanded too:
its sends are parked), started more than ``grace_seconds`` ago, with ``queued_count < recipients_count`` —
usually none, and then Redis is not read at all. For those, the expansion jobs that exist are read from Redis
(:class:`libs.jobscan.JobScan` over the ``campaigns`` queue and dead letters on their way to the ledger); a
campaign without any, in two scans ``confirm_after`` seconds apart with ``queued_count`` unchanged, and without
a dead-lettered expansion not replayed, gets one job per slice that still has a recipient without a message.
Expansion is idempotent (rows unique per campaign + recipient), and only slices with a recipient still without a
message are sent (a slice's rows are created all at once), so the sends already pushed are not pushed again.
"""

from __future__ import annotations

import datetime as dt
import logging

import redis

from libs import contracts
from libs.campaigns import store
from libs.campaigns.actions import SLICE, expansion_jobs
from libs.db.engine import Database
from libs.deadletters import store as dead_letters
from libs.enqueue import enqueue_many
from libs.jobscan import JobScan, Suspects, SweepLock

logger = logging.getLogger(__name__)

#: Seconds between the two scans that must both find a campaign without expansion job.
DEFAULT_CONFIRM_AFTER_S = 30.0


def sweep_expansions(
    db: Database,
    client: redis.Redis,
    namespace: str,
    *,
    grace_seconds: int,
    confirm_after: float = DEFAULT_CONFIRM_AFTER_S,
) -> dict[int, int]:
    """Enqueue the missing expansion of every stalled campaign (see the module docstring); returns campaign id →
    slices enqueued."""
    with SweepLock(client, namespace, "campaigns") as acquired:
        if not acquired:
            return {}
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace_seconds)
        with db.session() as session:
            stalled = store.unexpanded(session, before)
        suspects = Suspects(client, namespace, "campaigns")
        if not stalled:
            suspects.confirm({}, confirm_after=confirm_after)
            return {}
        scan = JobScan(client, namespace)
        workers = scan.live_workers()
        places = [*scan.queue_places(contracts.CAMPAIGNS, workers), *scan.queue_places(contracts.DEAD_LETTER, workers)]
        present = scan.values(places, "campaign_id")
        missing = {c: str(n) for c, n in stalled.items() if c not in present}
        confirmed = suspects.confirm(missing, confirm_after=confirm_after)
        return _enqueue(db, client, namespace, sorted(confirmed)) if confirmed else {}


def _enqueue(db: Database, client: redis.Redis, namespace: str, campaigns: list[int]) -> dict[int, int]:
    enqueued: dict[int, int] = {}
    with db.session() as session:
        dead = dead_letters.dead_expansions(session, campaigns)
        for campaign_id in campaigns:
            if campaign_id in dead:
                continue
            jobs = expansion_jobs(campaign_id, store.slices_left(session, campaign_id, SLICE))
            enqueued[campaign_id] = enqueue_many(client, namespace, jobs, lifecycle=True)
    if enqueued:
        logger.warning("campaign sweep: expansion enqueued again for %s (slices per campaign)", enqueued)
    return enqueued
