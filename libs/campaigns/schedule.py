"""Periodic campaign work: start due campaigns exactly once, and close finished ones."""

from __future__ import annotations

import redis
from sqlalchemy import text

from libs import contracts
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.events import sql as events

#: Recipients per expansion job.
SLICE = 1_000

#: A conditional update: of two schedulers (or overlapping ticks) only one moves a campaign to running (and
#: writes its ``campaign.status`` event).
CLAIM_DUE = f"""
WITH started AS (
  UPDATE campaigns SET status = 'running', started_at = now()
  WHERE id IN (SELECT id FROM campaigns WHERE status = 'scheduled' AND start_at <= now()
               ORDER BY start_at LIMIT 100 FOR UPDATE SKIP LOCKED)
  RETURNING {events.CAMPAIGN_RETURNING}
), events_written AS (
{events.campaign_status("started", "started")}
)
SELECT id FROM started
"""

#: The first and last recipient id of each slice (psycopg parameters: shared with the API's start).
SLICES = """
SELECT min(id) AS first, max(id) AS last FROM (
  SELECT id, (row_number() OVER (ORDER BY id) - 1) / %(size)s AS slice
  FROM campaign_recipients WHERE campaign_id = %(campaign)s
) s GROUP BY slice ORDER BY slice
"""

FINISH = f"""
WITH finished AS (
  UPDATE campaigns c SET status = 'completed', finished_at = now()
  WHERE c.status = 'running' AND c.queued_count >= c.recipients_count
    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = c.id AND m.status IN ('queued', 'sending'))
  RETURNING {", ".join(f"c.{column.strip()}" for column in events.CAMPAIGN_RETURNING.split(","))}
), events_written AS (
{events.campaign_status("finished", "completed")}
)
SELECT id FROM finished
"""


def start_due_campaigns(db: Database, client: redis.Redis, namespace: str) -> list[int]:
    """Start every scheduled campaign whose time has come; returns their ids.

    The status change and the enqueue of its expansion jobs happen in one transaction (the enqueue just
    before the commit): a crash in between leaves the campaign scheduled and the next tick starts it;
    expansion is idempotent, so a repeat creates no duplicate message.
    """
    with db.session() as session:
        started = [row[0] for row in session.connection().exec_driver_sql(CLAIM_DUE)]
        for campaign_id in started:
            slices = session.connection().exec_driver_sql(SLICES, {"size": SLICE, "campaign": campaign_id}).all()
            enqueue_many(
                client,
                namespace,
                (
                    contracts.EXPAND_CAMPAIGN_BATCH.message(contracts.ExpandCampaignBatch(campaign_id, first, last))
                    for first, last in slices
                ),
            )
    return started


def unpark_campaigns(db: Database, client: redis.Redis, lanes: Lanes) -> list[int]:
    """Unpark the sends of every campaign that is no longer paused (a resume whose own unpark was lost)."""
    parked = lanes.parked_campaigns(client)
    if not parked:
        return []
    with db.session() as session:
        paused = set(
            session.execute(
                text("SELECT id FROM campaigns WHERE id = ANY(:ids) AND status = 'paused'"), {"ids": parked}
            ).scalars()
        )
    released = [campaign_id for campaign_id in parked if campaign_id not in paused]
    for campaign_id in released:
        lanes.unpark(client, campaign_id)
    return released


def finish_campaigns(db: Database) -> list[int]:
    """Mark running campaigns whose every message reached a final state as completed."""
    with db.session() as session:
        return [row[0] for row in session.connection().exec_driver_sql(FINISH)]
