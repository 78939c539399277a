"""Ops routes: queue stats, job lookup, dead letters (browse, replay), health and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from dramatiq import Message
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import ApiError, context, error_response, json_response, path_id, query_int
from libs.db import store as db_store
from libs.deadletters import actions
from libs.deadletters.store import DeadLetterRow, Filter
from libs.ops.stats import job_lookup_async, queue_stats_async
from libs.timeparse import TimeParseError, parse_since_text

#: Longest a readiness probe waits on each dependency.
READY_TIMEOUT_SECONDS = 2.0


async def queues(request: Request) -> Response:
    """``GET /api/queues``: every zapq queue's depth, in-flight, dead, last-hour rates and durations.

    The figures are :class:`libs.ops.stats.QueueStats`, the object ``zapq stats`` and the dashboard show too:
    ``done_last_minute`` / ``failed_last_minute`` count the last *full* minute; ``rate_per_second`` is over the
    last ``rate_window_s`` seconds; ``completed_per_minute`` is the last hour, oldest first, its last entry the
    current (partial) minute."""
    ctx = context(request)
    stats = await queue_stats_async(ctx.redis, ctx.namespace, ctx.pool)
    return json_response([item.to_dict() for item in stats])


async def job(request: Request) -> Response:
    """``GET /api/jobs/{id}``: state, position and ETA of a job by its Dramatiq message id."""
    ctx = context(request)
    message_id = request.path_params["id"]
    if not 0 < len(message_id) <= 64:
        raise ApiError(404, "no such job")
    info = await job_lookup_async(ctx.redis, ctx.namespace, message_id, ctx.pool)
    if info.state is None:
        raise ApiError(404, f"no job {message_id} (unknown, or its record expired after 24 h)")
    return json_response(info.to_dict())


def dead_letter_dict(row: DeadLetterRow) -> dict[str, Any]:
    """A ledger row as the API shows it (no traceback, no payload)."""
    return row.as_dict(max_error=1000)


async def dead_letters(request: Request) -> Response:
    """``GET /api/dead-letters[?queue=Q&since=2h|ISO&limit=N&state=dead]``: newest first."""
    params = request.query_params
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    state = params.get("state", "all")
    if state not in ("all", "dead"):
        raise ApiError(400, "state must be all or dead")
    try:
        since = parse_since_text(params["since"]) if params.get("since") else None
    except TimeParseError as exc:
        raise ApiError(400, str(exc)) from None
    flt = Filter(queue=params.get("queue") or None, since=since, only_dead=state == "dead")
    rows = await run_in_threadpool(actions.list_rows, context(request).db, flt, limit=limit)
    return json_response([dead_letter_dict(row) for row in rows])


async def replay_dead_letter(request: Request) -> Response:
    """``POST /api/dead-letters/{id}/replay``: reopen the job's row and re-enqueue the job with fresh attempts (once).

    409 when it was replayed already, or when its row must not run now (the reason says why: e.g. the message's
    connection still needs attention).
    """
    dead_letter_id = path_id(request)
    ctx = context(request)

    def enqueue(message: Message[Any]) -> Any:
        return ctx.broker().enqueue(message)  # the broker is built on first use, in the worker thread

    row = await run_in_threadpool(actions.replay_one, ctx.db, enqueue, dead_letter_id)
    return json_response({"replayed": dead_letter_id, "job_id": row.message_id, "job": f"/api/jobs/{row.message_id}"})


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process answers (no dependency checked)."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: Redis ``PING`` and Postgres ``SELECT 1``; 503 naming what failed."""
    ctx = context(request)

    async def check_redis() -> None:
        await ctx.redis.ping()  # type: ignore[misc]

    async def check_postgres() -> None:
        async with ctx.pool.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            await db_store.ping(conn)

    results: dict[str, str] = {}
    for name, check in (("redis", check_redis), ("postgres", check_postgres)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"failed: {type(exc).__name__}"
    failed = [name for name, result in results.items() if result != "ok"]
    if failed:
        return error_response(503, f"not ready: {', '.join(failed)} unavailable", results)
    return json_response({"status": "ready", **results})
