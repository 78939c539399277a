"""Campaigns: create, import recipients from a streamed CSV, and the state machine with its counters.

States: draft → scheduled | running, running ⇄ paused, any unfinished → cancelled. Every transition is one
conditional ``UPDATE … WHERE status IN (…)`` that also writes its ``campaign.status`` event, so two concurrent
starts enqueue the expansion once. A start enqueues its expansion jobs before its transaction commits: if the
queue is unavailable the campaign stays as it was (503), so a campaign is never ``running`` with no job.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from typing import Any

import orjson
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response

from libs import contracts
from libs.api.csvstream import CsvError, CsvStream
from libs.api.http import ApiError, context, json_response, path_id, read_model
from libs.api.schemas import CampaignIn, CampaignStartIn, normalize_phone
from libs.campaigns.lanes import Lanes
from libs.campaigns.schedule import SLICE, SLICES
from libs.enqueue import enqueue_many_async
from libs.events import sql as events

logger = logging.getLogger(__name__)

#: Rejected CSV rows reported back in detail.
MAX_REPORTED_ERRORS = 20
#: Largest upload accepted.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024

COLUMNS = """id, company_id, connection_id, name, status, content_type, body, template, start_at, recipients_count,
queued_count, sent_count, delivered_count, read_count, failed_count, created_at, started_at, finished_at"""

INSERT_RECIPIENTS = """
INSERT INTO campaign_recipients (campaign_id, recipient, variables)
SELECT %s, r, v::jsonb FROM unnest(%s::text[], %s::text[]) AS t(r, v)
ON CONFLICT (campaign_id, recipient) DO NOTHING
"""


#: action → (states it may leave, state it enters, the ``campaign.status`` it announces)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "pause": (("running",), "paused", "paused"),
    "resume": (("paused",), "running", "resumed"),
    "cancel": (("draft", "scheduled", "running", "paused"), "cancelled", "cancelled"),
}


def _transition_sql(set_clause: str, announce: str) -> str:
    """A conditional transition (``%(id)s``, ``%(sources)s``) with its ``campaign.status`` event."""
    return f"""
WITH moved AS (
  UPDATE campaigns SET {set_clause} WHERE id = %(id)s AND status = ANY(%(sources)s) RETURNING {COLUMNS}
), events_written AS (
{events.campaign_status("moved", announce)}
)
SELECT * FROM moved"""


#: Transition SQL per action, and for start (now or later).
TRANSITION_SQL = {
    action: _transition_sql(
        f"status = '{target}', finished_at = CASE WHEN '{target}' = 'cancelled' THEN now() ELSE finished_at END",
        announce,
    )
    for action, (_, target, announce) in TRANSITIONS.items()
}
START_NOW = _transition_sql(
    "status = 'running', start_at = COALESCE(%(start_at)s, start_at), started_at = now()", "started"
)
SCHEDULE = _transition_sql("status = 'scheduled', start_at = %(start_at)s", "scheduled")


def _out(row: dict[str, Any]) -> dict[str, Any]:
    done = row["sent_count"] + row["failed_count"]
    total = row["recipients_count"]
    return {**row, "progress": round(done / total, 4) if total else 0.0}


async def _fetch(conn: Any, campaign_id: int) -> dict[str, Any]:
    row: dict[str, Any] | None = await (
        await conn.execute(f"SELECT {COLUMNS} FROM campaigns WHERE id = %s", (campaign_id,))
    ).fetchone()
    if row is None:
        raise ApiError(404, f"no campaign {campaign_id}")
    return row


async def create_campaign(request: Request) -> Response:
    """``POST /api/campaigns`` → 201, status ``draft``."""
    body = await read_model(request, CampaignIn)
    async with context(request).pool.connection() as conn:
        found = await (
            await conn.execute("SELECT company_id FROM connections WHERE id = %s", (body.connection_id,))
        ).fetchone()
        if found is None or found["company_id"] != body.company_id:
            raise ApiError(422, f"connection {body.connection_id} does not belong to company {body.company_id}")
        template = body.template.model_dump() if body.template is not None else None
        cursor = await conn.execute(
            "INSERT INTO campaigns (company_id, connection_id, name, content_type, body, template) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
            (
                body.company_id,
                body.connection_id,
                body.name,
                "template" if template else "text",
                body.text,
                Jsonb(template) if template else None,
            ),
        )
        row = await cursor.fetchone()
        assert row is not None
        return json_response(_out(row), 201)


async def list_campaigns(request: Request) -> Response:
    """``GET /api/campaigns[?limit=N]``: newest first, with progress."""
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 500:
        raise ApiError(400, "limit must be 1 to 500")
    async with context(request).pool.connection() as conn:
        cursor = await conn.execute(f"SELECT {COLUMNS} FROM campaigns ORDER BY id DESC LIMIT %s", (int(limit),))
        return json_response([_out(row) for row in await cursor.fetchall()])


async def get_campaign(request: Request) -> Response:
    """``GET /api/campaigns/{id}``: the campaign with its counters and progress."""
    async with context(request).pool.connection() as conn:
        return json_response(_out(await _fetch(conn, path_id(request))))


def _open_for_recipients(campaign_id: int, campaign: dict[str, Any] | None) -> None:
    if campaign is None:
        raise ApiError(404, f"no campaign {campaign_id}")
    if campaign["status"] not in ("draft", "scheduled"):
        reason = f"campaign {campaign_id} is {campaign['status']}: recipients can only be added before it starts"
        raise ApiError(409, reason)


async def upload_recipients(request: Request) -> Response:
    """``POST /api/campaigns/{id}/recipients``: a ``text/csv`` body with a ``phone`` column (+ variables).

    Parsed while it streams in; valid rows are spooled to a temporary file, so no database connection or
    lock is held for as long as a (slow) client takes to send. Then one transaction inserts them in batches
    of 1,000 (all or nothing); duplicates are skipped; rows without a valid phone are rejected and reported
    (the first 20).
    """
    campaign_id = path_id(request)
    ctx = context(request)
    async with ctx.pool.connection() as conn:  # refuse early, before reading a large body
        cursor = await conn.execute("SELECT status FROM campaigns WHERE id = %s", (campaign_id,))
        _open_for_recipients(campaign_id, await cursor.fetchone())
    stream = CsvStream()
    header: list[str] | None = None
    stats = {"rows": 0, "inserted": 0, "rejected": 0, "valid": 0}
    errors: list[dict[str, Any]] = []
    received = 0

    with tempfile.TemporaryFile() as spool:

        def take(records: list[list[str]]) -> None:
            nonlocal header
            for record in records:
                if header is None:
                    header = [name.strip() for name in record]
                    if "phone" not in [name.lower() for name in header]:
                        raise ApiError(400, "the CSV header needs a 'phone' column")
                    continue
                stats["rows"] += 1
                row = dict(zip(header, record, strict=False))
                phone = next((v for k, v in row.items() if k.lower() == "phone"), "")
                try:
                    if len(record) != len(header):
                        raise ValueError(f"{len(record)} fields, the header has {len(header)}")
                    recipient = normalize_phone(phone)
                except ValueError as exc:
                    stats["rejected"] += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append({"row": stats["rows"], "reason": str(exc)})
                    continue
                variables = {k: v for k, v in row.items() if k.lower() != "phone"}
                spool.write(orjson.dumps([recipient, orjson.dumps(variables).decode()]) + b"\n")
                stats["valid"] += 1

        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_UPLOAD_BYTES:
                    raise ApiError(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
                take(stream.feed(chunk))
            take(stream.feed(b"", final=True))
        except CsvError as exc:
            raise ApiError(400, str(exc)) from None
        if header is None:
            raise ApiError(400, "the upload is empty: a header with a 'phone' column is needed")
        spool.seek(0)

        async with ctx.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute("SELECT status FROM campaigns WHERE id = %s FOR UPDATE", (campaign_id,))
            _open_for_recipients(campaign_id, await cursor.fetchone())  # it may have started meanwhile
            batch: list[list[str]] = []
            for line in spool:
                batch.append(orjson.loads(line))
                if len(batch) >= SLICE:
                    stats["inserted"] += await _insert_recipients(conn, campaign_id, batch)
                    batch = []
            stats["inserted"] += await _insert_recipients(conn, campaign_id, batch)
            cursor = await conn.execute(
                f"UPDATE campaigns SET recipients_count = recipients_count + %s WHERE id = %s RETURNING {COLUMNS}",
                (stats["inserted"], campaign_id),
            )
            updated = await cursor.fetchone()
            assert updated is not None
    duplicates = stats.pop("valid") - stats["inserted"]
    return json_response(
        {**stats, "duplicates": duplicates, "errors": errors, "campaign": _out(updated)},
        200,
    )


async def _insert_recipients(conn: Any, campaign_id: int, batch: list[list[str]]) -> int:
    if not batch:
        return 0
    cursor = await conn.execute(INSERT_RECIPIENTS, (campaign_id, [r for r, _ in batch], [v for _, v in batch]))
    return int(cursor.rowcount)


async def start_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/start``: run now (enqueue its expansion) or schedule for ``start_at``."""
    campaign_id = path_id(request)
    body = await read_model(request, CampaignStartIn) if await request.body() else CampaignStartIn()
    ctx = context(request)
    later = body.start_at is not None and body.start_at > dt.datetime.now(dt.UTC)
    allowed = ["draft", "scheduled"]  # a scheduled campaign may be moved to another time, or started now
    params = {"id": campaign_id, "sources": allowed, "start_at": body.start_at}
    async with ctx.pool.connection() as conn:
        campaign = await _fetch(conn, campaign_id)
        if campaign["recipients_count"] == 0:
            raise ApiError(409, f"campaign {campaign_id} has no recipients")
        async with conn.transaction():
            row = await (await conn.execute(SCHEDULE if later else START_NOW, params)).fetchone()
            if row is None:
                current = await _fetch(conn, campaign_id)
                raise ApiError(409, f"campaign {campaign_id} is {current['status']}: it cannot be started")
            if later:
                return json_response(_out(row))
            slices = await (await conn.execute(SLICES, {"size": SLICE, "campaign": campaign_id})).fetchall()
            jobs = [
                contracts.EXPAND_CAMPAIGN_BATCH.message(
                    contracts.ExpandCampaignBatch(campaign_id, s["first"], s["last"])
                )
                for s in slices
            ]
            try:  # before the commit: a failed enqueue rolls the start back
                await enqueue_many_async(ctx.redis, ctx.namespace, jobs, lifecycle=True)
            except Exception:
                logger.warning("campaign %s not started: its jobs could not be enqueued", campaign_id, exc_info=True)
                raise ApiError(503, "the queue is unavailable; the campaign was not started, retry later") from None
    return json_response({**_out(row), "expansion_jobs": [job.message_id for job in jobs]})


async def _transition(request: Request, action: str) -> Response:
    campaign_id = path_id(request)
    sources, target, _ = TRANSITIONS[action]
    async with context(request).pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(TRANSITION_SQL[action], {"id": campaign_id, "sources": list(sources)})
        row = await cursor.fetchone()
        if row is None:
            current = await _fetch(conn, campaign_id)
            raise ApiError(409, f"campaign {campaign_id} is {current['status']}: cannot {action}")
        if target == "cancelled":
            await conn.execute(
                "UPDATE messages SET status = 'cancelled', updated_at = now() "
                "WHERE campaign_id = %s AND status = 'queued'",
                (campaign_id,),
            )
    if target != "paused":  # its parked sends go back to the company's lane (cancelled ones are then skipped)
        ctx = context(request)
        try:
            await Lanes(ctx.namespace).unpark_async(ctx.redis, campaign_id)
        except Exception:  # the scheduler's unpark sweep releases them within a minute
            logger.warning("campaign %s: parked sends not released yet", campaign_id, exc_info=True)
    return json_response(_out(row))


async def pause_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/pause``: running → paused (queued sends wait)."""
    return await _transition(request, "pause")


async def resume_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/resume``: paused → running."""
    return await _transition(request, "resume")


async def cancel_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/cancel``: → cancelled; its still-queued messages are cancelled."""
    return await _transition(request, "cancel")
