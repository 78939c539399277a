"""Outbox sweep of sends: a message row whose send job Redis no longer holds is enqueued again.

A send is a Postgres row first (``queued``) and a job second. The job can go missing: Redis lost writes (a
restart without persistence, a failover to a lagging replica), a crash between a commit and its enqueue (a
campaign slice's rows are committed before their sends are pushed), someone deleted keys. Such a row would
stay ``queued`` — or ``sending``, if its worker died with it — for ever.

Every minute (``services.scheduler``) the sweep:

1. reads the candidates from Postgres: outbound rows ``queued`` or ``sending`` without a provider id, unchanged
   for ``grace_seconds``, on an **active** connection, not of a paused or cancelled campaign (a held send waits
   legitimately; if its job is missing it is found once the hold ends). Two index scans
   (``ix_messages_campaign_status``: API sends, then the running campaigns' sends). None: nothing else is read;
2. scans Redis for the send jobs that exist (:class:`libs.jobscan.JobScan`: the three send queues with their
   fetched, delayed and dead jobs, the fair lanes and parked sends, and dead letters on their way to the
   ledger) — inside Redis, a few hundred bytes per thousand jobs back;
3. keeps what is missing as suspects; acts only on those missing in two scans ``confirm_after`` seconds apart,
   the row unchanged in between (:class:`libs.jobscan.Suspects`), so a job that moved while a scan read past
   it is never duplicated;
4. leaves alone rows whose job is a dead letter not replayed (an operator's decision);
5. in one transaction: touches each confirmed row (``updated_at``) if it is still unchanged — a row claimed
   meanwhile is skipped — enqueues its job, commits. API sends go back to their tier's queue under their
   deterministic job id (:func:`libs.sending.jobs.send_job`), campaign sends to their company's fair lane.

A duplicate is harmless (the sender claims a row once), and none is made for a job that exists; a touched row
is not a candidate again for ``grace_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from libs import contracts
from libs.campaigns.lanes import Lanes
from libs.companies import store as companies
from libs.db.engine import Database
from libs.deadletters import store as dead_letters
from libs.enqueue import enqueue_many
from libs.jobscan import JobScan, Suspects, SweepLock
from libs.messages import store as messages
from libs.sending.jobs import send_job

logger = logging.getLogger(__name__)

#: Seconds between the two scans that must both find a job missing.
DEFAULT_CONFIRM_AFTER_S = 30.0
#: Queues whose jobs carry ``message_id`` (the send tiers) — and the dead letters on their way to the ledger.
SEND_QUEUES = (contracts.MESSAGES_URGENT, contracts.MESSAGES, contracts.MESSAGES_LOW)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep saw and did (logged; read by the tests)."""

    candidates: int = 0
    missing: int = 0
    dead: int = 0
    enqueued: int = 0
    skipped: bool = False


def _stamp(value: dt.datetime) -> str:
    return value.isoformat()


def sweep_sends(
    db: Database,
    client: redis.Redis,
    namespace: str,
    lanes: Lanes,
    *,
    grace_seconds: int,
    confirm_after: float = DEFAULT_CONFIRM_AFTER_S,
) -> SweepResult:
    """Enqueue again every send whose job is missing from Redis (see the module docstring)."""
    with SweepLock(client, namespace, "sends") as acquired:
        if not acquired:
            return SweepResult(skipped=True)
        return _sweep(db, client, namespace, lanes, grace_seconds=grace_seconds, confirm_after=confirm_after)


def _sweep(
    db: Database, client: redis.Redis, namespace: str, lanes: Lanes, *, grace_seconds: int, confirm_after: float
) -> SweepResult:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace_seconds)
    with db.session() as session:
        rows = {row[0]: row for row in messages.sweep_candidates(session, before)}
    suspects = Suspects(client, namespace, "sends")
    if not rows:
        suspects.confirm({}, confirm_after=confirm_after)
        return SweepResult()
    started = time.monotonic()
    scan = JobScan(client, namespace)
    workers = scan.live_workers()
    with_lanes = any(row[1] is not None for row in rows.values())
    places = [
        place
        for queue in SEND_QUEUES
        for place in scan.queue_places(queue, workers, lanes if with_lanes and queue == lanes.queue else None)
    ]
    places += scan.queue_places(contracts.DEAD_LETTER, workers)
    present = scan.values(places, "message_id")
    missing = {message_id: _stamp(row[2]) for message_id, row in rows.items() if message_id not in present}
    confirmed = suspects.confirm(missing, confirm_after=confirm_after)
    result = SweepResult(candidates=len(rows), missing=len(missing))
    if confirmed:
        result = _enqueue(db, client, namespace, lanes, [rows[i] for i in sorted(confirmed)], result)
    logger.info(
        "send sweep: %d candidate(s), %d missing from Redis, %d enqueued again, %d dead letter(s) left (%.2f s)",
        result.candidates,
        result.missing,
        result.enqueued,
        result.dead,
        time.monotonic() - started,
    )
    return result


def _enqueue(
    db: Database, client: redis.Redis, namespace: str, lanes: Lanes, rows: Sequence[Any], result: SweepResult
) -> SweepResult:
    """Touch the confirmed rows still unchanged and enqueue their jobs, in one transaction."""
    with db.session() as session:
        dead = dead_letters.dead_sends(session, [row[0] for row in rows])
        live = [row for row in rows if row[0] not in dead]
        due = messages.sweep_touch(session, [row[0] for row in live], [row[2] for row in live])
        direct = [
            send_job(message_id, priority, created)
            for message_id, _, campaign, priority, created in due
            if campaign is None
        ]
        enqueue_many(client, namespace, direct, lifecycle=True)
        by_company: dict[int, list[int]] = {}
        for message_id, company_id, campaign_id, _, _ in due:
            if campaign_id is not None:
                by_company.setdefault(int(company_id), []).append(int(message_id))
        if by_company:
            weights = companies.campaign_weights(session, list(by_company))
            for company_id, ids in by_company.items():
                sends = (contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in ids)
                lanes.push(client, company_id, sends, weight=weights.get(company_id, 1))
    if by_company:
        lanes.feed(client)
    if due:
        logger.warning("send sweep: %d send(s) missing from Redis enqueued again", len(due))
    return SweepResult(
        candidates=result.candidates, missing=result.missing, dead=len(dead), enqueued=len(due), skipped=False
    )
