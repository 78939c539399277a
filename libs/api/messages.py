"""Outbound messages created by producers: stored as ``queued``, then enqueued on their tier's queue.

``Idempotency-Key`` (unique per company) makes a create safe to retry: a repeat answers the stored message
with 200 instead of 201 and enqueues nothing. The row and its ``message.created`` event are written in one
transaction, and the job is enqueued before that commits: if the enqueue fails, nothing was created and the
client gets a 503 to retry. (Should the commit fail after the enqueue, the job finds no row and ends as a
dead letter naming the missing message; the client was answered 503.)
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Message
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response

from libs import contracts
from libs.api.http import ApiError, context, json_response, path_id, query_id, query_int, read_model
from libs.api.schemas import MessageIn
from libs.enqueue import enqueue_many_async
from libs.events import sql as events
from libs.sending.jobs import send_job, send_job_id
from libs.sending.reopen import UNDO_REOPEN, VIA_API, NotRetryable, reopen_async

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200

COLUMNS = """id, company_id, connection_id, campaign_id, direction, priority, status, recipient, type, body,
payload, idempotency_key, external_id, error_code, error_title, attempts, history, created_at, queued_at,
sending_at, sent_at, delivered_at, read_at, failed_at"""

INSERT = f"""
WITH created AS (
  INSERT INTO messages (company_id, connection_id, direction, priority, status, recipient, type, body, payload,
                        idempotency_key, queued_at)
  VALUES (%(company_id)s, %(connection_id)s, 'out', %(priority)s, 'queued', %(recipient)s, %(type)s, %(body)s,
          %(payload)s, %(key)s, now())
  ON CONFLICT (company_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING {COLUMNS}
), events_written AS (
{events.message_created("created")}
)
SELECT * FROM created
"""


def job_id(row: dict[str, Any]) -> str | None:
    """The Dramatiq message id of an API-created message's send job (``None`` for other messages)."""
    if row["direction"] != "out" or row["campaign_id"] is not None:
        return None
    return send_job_id(row["id"], row["created_at"])


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "job_id": job_id(row)}


def row_send_job(row: dict[str, Any]) -> Message[Any]:
    """The send job of a stored message, on its tier's queue (an API-created one under its derived job id)."""
    if job_id(row) is not None:
        return send_job(row["id"], row["priority"], row["created_at"])
    return contracts.SEND_BY_TIER[row["priority"]].message(contracts.SendMessage(row["id"]))


async def _existing(conn: Any, company_id: int, key: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE company_id = %s AND idempotency_key = %s", (company_id, key)
    )
    row: dict[str, Any] | None = await cursor.fetchone()
    return row


async def _connection_for(conn: Any, body: MessageIn) -> int:
    company = await (await conn.execute("SELECT 1 FROM companies WHERE id = %s", (body.company_id,))).fetchone()
    if company is None:
        raise ApiError(422, f"company {body.company_id} does not exist")
    if body.connection_id is not None:
        cursor = await conn.execute("SELECT company_id, status FROM connections WHERE id = %s", (body.connection_id,))
        found = await cursor.fetchone()
        if found is None or found["company_id"] != body.company_id:
            raise ApiError(422, f"connection {body.connection_id} does not belong to company {body.company_id}")
        return body.connection_id
    cursor = await conn.execute(
        "SELECT id FROM connections WHERE company_id = %s AND status = 'active' ORDER BY id LIMIT 1",
        (body.company_id,),
    )
    found = await cursor.fetchone()
    if found is None:
        raise ApiError(422, f"company {body.company_id} has no active connection")
    return int(found["id"])


async def create_message(request: Request) -> Response:
    """``POST /api/messages`` → 201 (or 200 for a repeated ``Idempotency-Key``)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key.strip()) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    key = key.strip() if key else None
    body = await read_model(request, MessageIn)
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        if key is not None and (row := await _existing(conn, body.company_id, key)) is not None:
            return json_response(_out(row), 200)
        connection_id = await _connection_for(conn, body)
        payload = {"template": body.template.model_dump()} if body.template is not None else {}
        async with conn.transaction():
            cursor = await conn.execute(
                INSERT,
                {
                    "company_id": body.company_id,
                    "connection_id": connection_id,
                    "priority": body.priority,
                    "recipient": body.to,
                    "type": "template" if body.template is not None else "text",
                    "body": body.text,
                    "payload": Jsonb(payload),
                    "key": key,
                },
            )
            row = await cursor.fetchone()
            if row is not None:
                try:
                    await enqueue_many_async(ctx.redis, ctx.namespace, [row_send_job(row)], lifecycle=True)
                except Exception:
                    logger.warning("message for company %s not enqueued; not created", body.company_id, exc_info=True)
                    raise ApiError(503, "the queue is unavailable; nothing was created, retry later") from None
        if row is None:  # a concurrent request with the same key won the insert
            assert key is not None
            existing = await _existing(conn, body.company_id, key)
            assert existing is not None
            return json_response(_out(existing), 200)
    return json_response(_out(row), 201, headers={"location": f"/api/messages/{row['id']}"})


async def get_message(request: Request) -> Response:
    """``GET /api/messages/{id}``."""
    message_id = path_id(request)
    async with context(request).pool.connection() as conn:
        row = await (await conn.execute(f"SELECT {COLUMNS} FROM messages WHERE id = %s", (message_id,))).fetchone()
    if row is None:
        raise ApiError(404, f"no message {message_id}")
    return json_response(_out(row))


#: Filters of ``GET /api/messages``: query parameter → SQL condition.
MESSAGE_FILTERS = {
    "direction": "direction = %(direction)s",
    "status": "status = %(status)s",
}
DIRECTIONS = {"in", "out"}
STATUSES = {"received", "queued", "sending", "sent", "delivered", "read", "played", "failed", "cancelled"}
MAX_PAGE = 500


async def message_page(
    conn: Any, conditions: list[str], params: dict[str, Any], *, after: int | None, before: int | None, limit: int
) -> dict[str, Any]:
    """A page of messages by id: ``after`` (ascending from that id), else ``before`` / newest (descending);
    with the cursors to page on in either direction."""
    where = list(conditions)
    if after is not None:
        where.append("id > %(after)s")
        order = "ASC"
    else:
        if before is not None:
            where.append("id < %(before)s")
        order = "DESC"
    sql = f"SELECT {COLUMNS} FROM messages WHERE {' AND '.join(where) or 'true'} ORDER BY id {order} LIMIT %(limit)s"
    cursor = await conn.execute(sql, {**params, "after": after, "before": before, "limit": limit + 1})
    rows = await cursor.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [row["id"] for row in rows]
    return {
        "messages": [_out(row) for row in rows],
        "order": order.lower(),
        # page towards older messages / towards newer ones
        "before": str(min(ids)) if ids and (order == "ASC" or more) else None,
        "after": str(max(ids)) if ids and (order == "DESC" or more) else None,
        "has_more": more,
    }


def _message_filters(request: Request) -> tuple[list[str], dict[str, Any]]:
    params = request.query_params
    conditions: list[str] = []
    values: dict[str, Any] = {}
    company = query_id(request, "company_id")
    if company is not None:
        conditions.append("company_id = %(company)s")
        values["company"] = company
    campaign = query_id(request, "campaign_id")
    if campaign is not None:
        conditions.append("campaign_id = %(campaign)s")
        values["campaign"] = campaign
    contact = params.get("contact")
    if contact:
        digits = "".join(ch for ch in contact if ch.isdigit())
        if not 7 <= len(digits) <= 15:
            raise ApiError(400, "contact must be a phone number (7 to 15 digits)")
        conditions.append("recipient = %(contact)s")
        values["contact"] = digits
    for name, condition in MESSAGE_FILTERS.items():
        value = params.get(name)
        if value:
            allowed = DIRECTIONS if name == "direction" else STATUSES
            if value not in allowed:
                raise ApiError(400, f"{name} must be one of {', '.join(sorted(allowed))}")
            conditions.append(condition)
            values[name] = value
    return conditions, values


def page_bounds(request: Request) -> tuple[int | None, int | None, int]:
    after = query_id(request, "after")
    before = query_id(request, "before")
    if after is not None and before is not None:
        raise ApiError(400, "give after or before, not both")
    return after, before, query_int(request, "limit", default=50, low=1, high=MAX_PAGE)


async def list_messages(request: Request) -> Response:
    """``GET /api/messages?company_id=&contact=&direction=in|out&status=&campaign_id=&after=|before=&limit=``:
    newest first (``before=<id>`` pages back), or oldest first from ``after=<id>`` (pages forward)."""
    conditions, values = _message_filters(request)
    after, before, limit = page_bounds(request)
    async with context(request).pool.connection() as conn:
        return json_response(await message_page(conn, conditions, values, after=after, before=before, limit=limit))


async def retry_message(request: Request) -> Response:
    """``POST /api/messages/{id}/retry``: a failed message sent again → 200 with the message, queued.

    Fresh attempts; its failure is kept in ``history``; a campaign message's ``failed_count`` is given back (it
    counts in ``sent_count`` once sent). 409 with the reason when the message is not failed, or must not be
    sent now (see :mod:`libs.sending.reopen`); 503 (and the message failed as before) when the queue is down.
    """
    message_id = path_id(request)
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        try:
            await reopen_async(conn, message_id, via=VIA_API)
        except LookupError:
            raise ApiError(404, f"no message {message_id}") from None
        except NotRetryable as exc:
            raise ApiError(409, str(exc)) from None
        row = await (await conn.execute(f"SELECT {COLUMNS} FROM messages WHERE id = %s", (message_id,))).fetchone()
    assert row is not None
    job = row_send_job(row)
    try:
        await enqueue_many_async(ctx.redis, ctx.namespace, [job], lifecycle=True)
    except Exception:
        logger.warning("message %s reopened but not enqueued; failing it again", message_id, exc_info=True)
        async with ctx.pool.connection() as conn:
            await conn.execute(UNDO_REOPEN, {"id": message_id})
        raise ApiError(503, "the queue is unavailable; the message is failed as before, retry later") from None
    return json_response({**_out(row), "job_id": job.message_id})
