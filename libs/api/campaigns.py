"""Campaigns: create, import recipients from a streamed CSV, start / pause / resume / cancel.

The state machine and its guarantees are :mod:`libs.campaigns.actions`; these handlers parse and render.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_body_company, check_owner, check_row, principal
from libs.api.csvstream import CsvError, CsvStream
from libs.api.http import ApiError, body_chunks, context, json_response, path_id, query_int, read_model
from libs.api.kinds import dump
from libs.api.schemas import CAMPAIGN_MEDIA, CampaignIn, CampaignStartIn, normalize_phone
from libs.campaigns import actions, store
from libs.rules.budget import Budget

#: Rejected CSV rows reported back in detail.
MAX_REPORTED_ERRORS = 20
#: Largest upload accepted.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


def _out(row: dict[str, Any]) -> dict[str, Any]:
    done = row["sent_count"] + row["failed_count"] + row["suppressed_count"]  # suppressed: skipped at fan-out
    total = row["recipients_count"]
    return {**row, "progress": round(done / total, 4) if total else 0.0}


async def create_campaign(request: Request) -> Response:
    """``POST /api/campaigns`` → 201, status ``draft``."""
    body = await read_model(request, CampaignIn)
    check_body_company(request, body.company_id)
    values = {
        "company_id": body.company_id,
        "connection_id": body.connection_id,
        "name": body.name,
        "text": body.text,
        "template": body.template.model_dump() if body.template is not None else None,
        "kind": body.kind,
        "content": dump(getattr(body, body.kind)) if body.kind in CAMPAIGN_MEDIA else None,
    }
    ctx = context(request)
    return json_response(_out(await actions.create_campaign(ctx.pool, values, templates=ctx.templates)), 201)


async def list_campaigns(request: Request) -> Response:
    """``GET /api/campaigns[?limit=N]``: newest first, with progress."""
    limit = query_int(request, "limit", default=20, low=1, high=500)
    rows = await actions.newest_campaigns(context(request).pool, limit, principal(request).company_id)
    return json_response([_out(row) for row in rows])


async def get_campaign(request: Request) -> Response:
    """``GET /api/campaigns/{id}``: the campaign with its counters and progress.

    ``now`` is a state: how many of its messages are in each status at this moment (``queued`` = queued now;
    ``pending``: recipients the fan-out has not made messages yet). The ``*_count`` fields are running totals
    (``sent_count``: messages that ever reached sent)."""
    campaign_id = path_id(request)
    ctx = context(request)
    row = await actions.get_campaign(ctx.pool, campaign_id)
    check_row(request, row, "campaign", campaign_id)
    return json_response(
        {**_out(row), "budget": await actions.waiting_for_budget(ctx.redis, ctx.namespace, campaign_id)}
    )


async def owned(request: Request) -> int:
    """The campaign id of the path, 404 when a company key's company does not own it."""
    campaign_id = path_id(request)

    async def owner() -> dict[str, Any] | None:
        async with context(request).pool.connection() as conn:
            return await store.get(conn, campaign_id)

    await check_owner(request, owner, "campaign", campaign_id)
    return campaign_id


def _spooled(spool: IO[bytes]) -> Iterator[list[str]]:
    for line in spool:
        yield orjson.loads(line)


async def upload_recipients(request: Request) -> Response:
    """``POST /api/campaigns/{id}/recipients``: a ``text/csv`` body with a ``phone`` column (+ variables).

    Parsed while it streams in; valid rows are spooled to a temporary file, so no database connection or
    lock is held for as long as a (slow) client takes to send. Then one transaction inserts them in batches
    of 1,000 (all or nothing); duplicates are skipped; rows without a valid phone are rejected and reported
    (the first 20).
    """
    campaign_id = await owned(request)
    ctx = context(request)
    await actions.check_open_for_recipients(ctx.pool, campaign_id)  # refuse early, before reading a large body
    stream = CsvStream()
    header: list[str] | None = None
    stats = {"rows": 0, "inserted": 0, "rejected": 0, "valid": 0}
    errors: list[dict[str, Any]] = []

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
            async for chunk in body_chunks(request, MAX_UPLOAD_BYTES):
                take(stream.feed(chunk))
            take(stream.feed(b"", final=True))
        except CsvError as exc:
            raise ApiError(400, str(exc)) from None
        if header is None:
            raise ApiError(400, "the upload is empty: a header with a 'phone' column is needed")
        spool.seek(0)

        stats["inserted"], updated = await actions.add_recipients(ctx.pool, campaign_id, _spooled(spool))
    duplicates = stats.pop("valid") - stats["inserted"]
    return json_response(
        {**stats, "duplicates": duplicates, "errors": errors, "campaign": _out(updated)},
        200,
    )


async def start_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/start``: run now (enqueue its expansion) or schedule for ``start_at``; 422 when
    its template is not (or no longer) approved or its parameters do not fit (:mod:`libs.templates.catalogue`).

    Started now, the answer has ``warnings``: a ``tier_budget`` entry when the recipients exceed what is left of
    the portfolio's messaging limit, with when the campaign finishes at that pace (not an error)."""
    campaign_id = await owned(request)
    body = await read_model(request, CampaignStartIn, empty=CampaignStartIn())
    ctx = context(request)
    await actions.check_template(ctx.pool, ctx.templates, campaign_id)

    def start() -> actions.Started | None:  # in a worker thread: the start is written for sync callers too
        return actions.start_campaign(ctx.db, ctx.sync_redis, ctx.namespace, campaign_id, start_at=body.start_at)

    def warnings() -> list[dict[str, Any]]:
        return actions.tier_budget_warnings(ctx.db, ctx.sync_redis, Budget.from_settings(ctx.settings), campaign_id)

    ahead = await run_in_threadpool(warnings)  # before the fan-out starts using the budget
    started = await run_in_threadpool(start)
    assert started is not None
    if started.scheduled:
        return json_response(_out(started.campaign))
    jobs = [job.message_id for job in started.jobs]
    return json_response({**_out(started.campaign), "expansion_jobs": jobs, "warnings": ahead})


async def pause_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/pause``: running → paused (queued sends wait)."""
    ctx = context(request)
    return json_response(_out(await actions.pause_campaign(ctx.pool, ctx.redis, ctx.namespace, await owned(request))))


async def resume_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/resume``: paused → running (422 while its template is not approved)."""
    ctx = context(request)
    campaign_id = await owned(request)
    await actions.check_template(ctx.pool, ctx.templates, campaign_id)
    return json_response(_out(await actions.resume_campaign(ctx.pool, ctx.redis, ctx.namespace, campaign_id)))


async def cancel_campaign(request: Request) -> Response:
    """``POST /api/campaigns/{id}/cancel``: → cancelled; its still-queued messages are cancelled."""
    ctx = context(request)
    return json_response(_out(await actions.cancel_campaign(ctx.pool, ctx.redis, ctx.namespace, await owned(request))))
