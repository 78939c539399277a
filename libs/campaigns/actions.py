"""What a user or the scheduler does with a campaign — one function each, and the campaign state machine.

States: ``draft`` → ``scheduled`` | ``running``, ``running`` ⇄ ``paused``, any unfinished → ``cancelled``,
``running`` → ``completed`` once every message is final. Every transition is one conditional statement that
also writes its ``campaign.status`` event (:mod:`libs.campaigns.store`), so of two concurrent starts only one
enqueues the expansion.

**Start** (:func:`start_campaign`, used by the API and by the scheduler for due campaigns) enqueues its
expansion jobs (one per slice of :data:`SLICE` recipients) before its transaction commits: if the queue is
unavailable the campaign stays as it was (:class:`~libs.refusals.QueueUnavailableError`), so a campaign is
never ``running`` with no job; a crash between the enqueue and the commit leaves it as it was too, and
expansion is idempotent, so a repeat creates no duplicate message.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from dramatiq import Message
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from libs import contracts
from libs.campaigns import store
from libs.campaigns.lanes import Lanes
from libs.connections import store as connections
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.messages import kinds
from libs.messages import store as messages
from libs.refusals import ConflictError, InvalidError, NotFoundError, QueueUnavailableError
from libs.rules import limits, limits_store
from libs.rules.budget import Budget
from libs.templates import catalogue
from libs.templates import store as templates_store
from libs.templates.catalogue import TemplateCache
from libs.templates.params import campaign_components

logger = logging.getLogger(__name__)

#: Recipients per expansion job.
SLICE = 1_000

#: action → the states it may leave (the state it enters and the event it writes: ``store.MOVES``).
SOURCES: dict[str, tuple[str, ...]] = {
    "start": ("draft", "scheduled"),  # a scheduled campaign may be moved to another time, or started now
    "pause": ("running",),
    "resume": ("paused",),
    "cancel": ("draft", "scheduled", "running", "paused"),
}
#: The states recipients may be added in.
OPEN_FOR_RECIPIENTS = ("draft", "scheduled")


@dataclass(frozen=True)
class Started:
    """A campaign started (``jobs``: its expansion jobs) or ``scheduled`` for later (no jobs)."""

    campaign: dict[str, Any]
    jobs: list[Message[Any]] = field(default_factory=list)
    scheduled: bool = False


def expansion_jobs(campaign_id: int, slices: Iterable[tuple[int, int]]) -> list[Message[Any]]:
    """One ``expand_campaign_batch`` job per slice ``(first, last)`` of recipient ids."""
    return [
        contracts.EXPAND_CAMPAIGN_BATCH.message(contracts.ExpandCampaignBatch(campaign_id, first, last))
        for first, last in slices
    ]


async def create_campaign(
    pool: AsyncConnectionPool[Any], values: dict[str, Any], *, templates: TemplateCache | None = None
) -> dict[str, Any]:
    """A new ``draft`` campaign (``values``: company_id, connection_id, name, text or template, or a media
    ``kind`` with its ``content`` and ``text`` as caption). A template is checked against the connection's
    catalogue through ``templates`` (:mod:`libs.templates.catalogue`; its body parameters are the ``variables``
    columns plus any given in ``components``)."""
    async with pool.connection() as conn:
        found = await connections.owner(conn, values["connection_id"])
        if found is None or found["company_id"] != values["company_id"]:
            raise InvalidError(
                f"connection {values['connection_id']} does not belong to company {values['company_id']}"
            )
        template = values.get("template")
        if template and templates is not None:
            components = campaign_components(template)
            await catalogue.check(templates, conn, values["connection_id"], template, components)
        content = values.get("content")
        kind = "template" if template else values.get("kind") or "text"
        if found["provider"] != "meta" and (why := kinds.bridge_refusal(kind, content)) is not None:
            raise InvalidError(why)
        return await store.insert(
            conn,
            {
                "company_id": values["company_id"],
                "connection_id": values["connection_id"],
                "name": values["name"],
                "content_type": kind,
                "body": values.get("text"),
                "template": Jsonb(template) if template else None,
                "content": Jsonb(content) if content is not None else None,
            },
        )


async def check_template(pool: AsyncConnectionPool[Any], templates: TemplateCache, campaign_id: int) -> None:
    """Refuse to start a template campaign whose template its connection's catalogue no longer allows (paused
    or disabled since the campaign was made, …): :class:`~libs.refusals.RuleViolationError`."""
    async with pool.connection() as conn:
        campaign = await store.get(conn, campaign_id)
        if campaign is None or campaign["content_type"] != "template" or not campaign["template"]:
            return
        template = campaign["template"]
        await catalogue.check(templates, conn, campaign["connection_id"], template, campaign_components(template))


async def get_campaign(pool: AsyncConnectionPool[Any], campaign_id: int) -> dict[str, Any]:
    """One campaign; :class:`~libs.refusals.NotFoundError` when missing."""
    async with pool.connection() as conn:
        row = await store.get(conn, campaign_id)
        if row is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        return {**row, "now": with_unqueued(row, (await store.states(conn, [campaign_id]))[campaign_id])}


async def newest_campaigns(
    pool: AsyncConnectionPool[Any], limit: int, company_id: int | None = None
) -> list[dict[str, Any]]:
    """The newest campaigns (of one company, or all), each with ``now``: its messages per status now."""
    async with pool.connection() as conn:
        rows = await store.newest(conn, limit, company_id)
        now = await store.states(conn, [row["id"] for row in rows])
    return [{**row, "now": with_unqueued(row, now[row["id"]])} for row in rows]


def with_unqueued(row: dict[str, Any], states: dict[str, int]) -> dict[str, int]:
    """``states`` plus ``pending``: recipients not yet made messages (the fan-out has not reached them; none
    once the campaign is over)."""
    over = row["status"] in ("completed", "cancelled")
    return {"pending": 0 if over else max(0, row["recipients_count"] - sum(states.values())), **states}


def _open_for_recipients(campaign_id: int, status: str | None) -> None:
    if status is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    if status not in OPEN_FOR_RECIPIENTS:
        raise ConflictError(f"campaign {campaign_id} is {status}: recipients can only be added before it starts")


async def check_open_for_recipients(pool: AsyncConnectionPool[Any], campaign_id: int) -> None:
    """Refuse early (before a large upload is read) when recipients cannot be added."""
    async with pool.connection() as conn:
        _open_for_recipients(campaign_id, await store.status(conn, campaign_id))


async def add_recipients(
    pool: AsyncConnectionPool[Any], campaign_id: int, recipients: Iterable[Sequence[str]]
) -> tuple[int, dict[str, Any]]:
    """Add ``(phone, variables JSON)`` pairs in one transaction (all or nothing), in batches of :data:`SLICE`;
    duplicates are skipped. Returns how many were new and the campaign."""
    inserted = 0
    async with pool.connection() as conn, conn.transaction():
        # the campaign may have started since the upload began
        _open_for_recipients(campaign_id, await store.status(conn, campaign_id, for_update=True))
        batch: list[Sequence[str]] = []
        for recipient in recipients:
            batch.append(recipient)
            if len(batch) >= SLICE:
                inserted += await store.insert_recipients(conn, campaign_id, batch)
                batch = []
        inserted += await store.insert_recipients(conn, campaign_id, batch)
        return inserted, await store.add_recipients(conn, campaign_id, inserted)


def start_campaign(
    db: Database,
    client: redis.Redis,
    namespace: str,
    campaign_id: int,
    *,
    start_at: dt.datetime | None = None,
    due: bool = False,
) -> Started | None:
    """Start a campaign now (enqueue its expansion), or schedule it for ``start_at`` if that is in the future.

    ``due`` is the scheduler's start: only a ``scheduled`` campaign whose time has come, and ``None`` (no
    refusal) when it is not one (any more). Refused (:class:`~libs.refusals.ConflictError`) when the campaign
    has no recipients or is not in a state that can start.
    """
    later = start_at is not None and start_at > dt.datetime.now(dt.UTC)
    sources = ("scheduled",) if due else SOURCES["start"]
    with db.session() as session:
        if not due:
            campaign = store.get_sync(session, campaign_id)
            if campaign is None:
                raise NotFoundError(f"no campaign {campaign_id}")
            if campaign["recipients_count"] == 0:
                raise ConflictError(f"campaign {campaign_id} has no recipients")
        row = store.start(session, campaign_id, sources, start_at, later=later, due=due)
        if row is None:
            if due:
                return None
            current = store.get_sync(session, campaign_id)
            assert current is not None
            raise ConflictError(f"campaign {campaign_id} is {current['status']}: it cannot be started")
        if later:
            return Started(row, scheduled=True)
        _pause_if_template_stopped(session, row)
        jobs = expansion_jobs(campaign_id, store.slices(session, campaign_id, SLICE))
        try:  # before the commit: a failed enqueue rolls the start back
            enqueue_many(client, namespace, jobs, lifecycle=True)
        except Exception:
            logger.warning("campaign %s not started: its jobs could not be enqueued", campaign_id, exc_info=True)
            raise QueueUnavailableError("the queue is unavailable; the campaign was not started, retry later") from None
    return Started(row, jobs)


def _pause_if_template_stopped(session: Session, campaign: dict[str, Any]) -> None:
    """A campaign just started whose template Meta paused or disabled is paused at once, with the reason (the
    scheduler's start of a due campaign: the API's start refuses it before). Its expansion still runs; the
    sends wait for the resume."""
    stopped = templates_store.running_stopped(session, campaign["connection_id"], sorted(catalogue.STOPPING))
    for found in (s for s in stopped if s["id"] == campaign["id"]):
        reason = catalogue.stop_reason(found["name"], found["language"], found["status"], found["reason"])
        pause_by_rule(session, [campaign["id"]], reason)


def tier_budget_warnings(db: Database, client: redis.Redis, budget: Budget, campaign_id: int) -> list[dict[str, Any]]:
    """A started campaign's ``warnings``: when its recipients exceed what is left of its portfolio's messaging limit
    (:mod:`libs.rules.budget`), when it will finish at that pace. Not a refusal: the rest wait for budget.

    The count is an upper bound — recipients already reached within 24 h, or whose window is open, cost
    nothing — so the finish time is the latest it can be."""
    with db.session() as session:
        campaign = store.get_sync(session, campaign_id)
        if campaign is None:
            return []
        portfolio = limits.resolve(limits_store.portfolio(session, campaign["connection_id"]), budget.limit_override)
    if portfolio is None:
        return []
    needed = int(campaign["recipients_count"]) - int(campaign["suppressed_count"])
    estimate = budget.finish_estimate(client, portfolio.key, portfolio.limit, needed)
    if estimate is None:
        return []
    when = estimate["finishes_at"] or "never (the limit is 0)"
    message = (
        f"up to {needed} recipients but {estimate['remaining']} of the messaging limit ({portfolio.limit} new "
        f"recipients per 24 h) are left: the rest wait for tier budget; at that pace the last is sent around {when}"
    )
    return [{"code": "tier_budget", "message": message, "portfolio": portfolio.key, **estimate}]


async def waiting_for_budget(redis_client: aioredis.Redis, namespace: str, campaign_id: int) -> dict[str, Any] | None:
    """The campaign's sends waiting for tier budget (``state``, ``waiting``, ``frees_at``), or ``None``."""
    waiting = await Budget(namespace).waiting_async(redis_client, campaign_id)
    return None if waiting is None else waiting.as_dict()


def start_due_campaigns(db: Database, client: redis.Redis, namespace: str) -> list[int]:
    """Start every scheduled campaign whose time has come (:func:`start_campaign`); returns their ids. Of two
    schedulers (or overlapping ticks) only one starts each campaign."""
    with db.session() as session:
        due = store.due(session)
    return [campaign_id for campaign_id in due if start_campaign(db, client, namespace, campaign_id, due=True)]


async def _move(
    pool: AsyncConnectionPool[Any],
    redis_client: aioredis.Redis,
    namespace: str,
    action: str,
    campaign_id: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """``pause``, ``resume`` or ``cancel``: one conditional transition (a cancel also cancels the campaign's
    still-queued sends and drops those waiting for tier budget); then the sends it parked go back to the
    company's lane, unless it is paused now."""
    async with pool.connection() as conn, conn.transaction():
        row = await store.transition(conn, action, campaign_id, SOURCES[action], reason)
        if row is None:
            current = await store.get(conn, campaign_id)
            if current is None:
                raise NotFoundError(f"no campaign {campaign_id}")
            raise ConflictError(f"campaign {campaign_id} is {current['status']}: cannot {action}")
        if row["status"] == "cancelled":
            await messages.cancel_queued_of_campaign(conn, campaign_id)
    if row["status"] != "paused":  # its parked sends go back to the company's lane (cancelled ones are then skipped)
        try:
            if row["status"] == "cancelled":
                await Budget(namespace).forget_campaign_async(redis_client, campaign_id)
            await Lanes(namespace).unpark_async(redis_client, campaign_id)
        except Exception:  # the scheduler's unpark sweep releases them within a minute
            logger.warning("campaign %s: parked sends not released yet", campaign_id, exc_info=True)
    return row


async def pause_campaign(
    pool: AsyncConnectionPool[Any],
    redis_client: aioredis.Redis,
    namespace: str,
    campaign_id: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """running → paused (its queued sends wait); ``reason`` is shown with the campaign and in its event."""
    return await _move(pool, redis_client, namespace, "pause", campaign_id, reason)


def pause_by_rule(session: Session, campaign_ids: Iterable[int], reason: str) -> list[int]:
    """Pause the running ones of ``campaign_ids`` because a WhatsApp rule stops them (a template paused or
    disabled by Meta), in the caller's transaction: the same transition as :func:`pause_campaign`, with its
    ``campaign.status`` event carrying ``reason``. Their queued sends wait (the sender holds or parks each);
    a user resumes the campaign once the rule allows it. Returns the ids paused now (safe to run twice)."""
    paused = [cid for cid in campaign_ids if store.transition_sync(session, "pause", cid, SOURCES["pause"], reason)]
    for campaign_id in paused:
        logger.warning("campaign %s paused: %s", campaign_id, reason)
    return paused


def pause_campaigns_of_connections(session: Session, connection_ids: list[int], reason: str) -> list[dict[str, Any]]:
    """The system's pause (:func:`pause_campaign`'s statement, in the caller's transaction — the ingest worker's
    quality update): every running campaign of ``connection_ids`` → paused with ``reason``. A pause touches no
    Redis state (its sends park themselves), so nothing is left to do after the commit."""
    paused = []
    for campaign_id in store.running_of_connections(session, connection_ids):
        row = store.transition_sync(session, "pause", campaign_id, SOURCES["pause"], reason)
        if row is not None:
            paused.append(row)
    return paused


async def resume_campaign(
    pool: AsyncConnectionPool[Any], redis_client: aioredis.Redis, namespace: str, campaign_id: int
) -> dict[str, Any]:
    """paused → running (its parked sends go back to the company's lane)."""
    return await _move(pool, redis_client, namespace, "resume", campaign_id)


async def cancel_campaign(
    pool: AsyncConnectionPool[Any], redis_client: aioredis.Redis, namespace: str, campaign_id: int
) -> dict[str, Any]:
    """Any unfinished state → cancelled; its still-queued sends are cancelled."""
    return await _move(pool, redis_client, namespace, "cancel", campaign_id)


def complete_campaigns(db: Database) -> list[int]:
    """Mark running campaigns whose every message reached a final state as completed; their ids."""
    with db.session() as session:
        return store.finish(session)


def unpark_campaigns(db: Database, client: redis.Redis, lanes: Lanes) -> list[int]:
    """Unpark the sends of every campaign that is no longer paused (a resume whose own unpark was lost)."""
    parked = lanes.parked_campaigns(client)
    if not parked:
        return []
    with db.session() as session:
        paused = store.paused_among(session, parked)
    released = [campaign_id for campaign_id in parked if campaign_id not in paused]
    for campaign_id in released:
        lanes.unpark(client, campaign_id)
    return released
