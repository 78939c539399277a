"""Delivering events to webhook endpoints: one *pump* per endpoint at a time, many deliveries in flight.

A pump (the ``deliver_events`` job of one endpoint) takes the endpoint's lock — a session advisory lock on
one Postgres connection per process (:class:`PumpLocks`), released by Postgres itself if the process dies —
then, until nothing is due:

* claims due heads (``pending`` → ``delivering``, oldest due first) up to the endpoint's in-flight limit,
* starts each at the endpoint's pace (``rate_per_second``), signed per Standard Webhooks, 10 s timeout, the
  answer read up to a cap and recorded (≤ 1 KB),
* records each outcome in batches (:mod:`libs.batching`): delivered, or the next attempt on the retry
  schedule, or — schedule exhausted — ``failed`` with a dead letter in the ledger (replayable); the next
  delivery of the conversation is promoted. ``410 Gone`` disables the endpoint; an endpoint whose attempts
  all failed for ``event_disable_after_hours`` is disabled with a Sentry alert.

Each endpoint has its own pump, backlog (its rows) and limits, so a slow or dead endpoint only ever occupies
its own pump. A pump works for at most a slice, then hands over to a fresh job; when idle it schedules a
delayed job for its next retry. A pump that takes a lock finds any ``delivering`` rows of the endpoint left by
a dead pump and delivers them again (same ``webhook-id``): at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis
import redis.asyncio as aioredis
import sentry_sdk
from dramatiq import Message
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from libs import contracts, tracing
from libs.batching import Coalescer
from libs.events import signing, store
from libs.events.client import EndpointClient
from libs.events.kicks import Kicks
from libs.events.types import event_id

logger = logging.getLogger(__name__)

#: What a response answer keeps of the body for the attempt log.
EXCERPT_BYTES = 1024
#: How much of a response is read at all (the rest is never read: the connection is closed).
READ_BYTES = 64 * 1024
#: A pump hands over to a fresh job after this long (seconds), so shutdowns and rebalancing are prompt.
SLICE_S = 30.0
#: Longest delay of a scheduled wake-up (seconds); the periodic sweep covers anything later.
MAX_WAKE_S = 600.0
#: How often a busy pump looks for newly due work besides completions and kicks (seconds).
RECHECK_S = 1.0
#: How often a busy pump reloads its endpoint's settings (enabled, secret, limits) (seconds).
RELOAD_S = 5.0
#: The context manager of an attempt not traced (shared, no allocation).
_UNTRACED = contextlib.nullcontext()
#: Random spread added to each retry delay (a fraction of it), so a recovering endpoint is not stampeded.
JITTER = 0.1


@dataclass(frozen=True)
class DispatchSettings:
    """The delivery policy (from :class:`libs.settings.Settings`)."""

    #: Delay before each retry, in seconds; len + 1 attempts in all (the first is immediate).
    schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    timeout_s: float = 10.0
    disable_after_s: float = 5 * 86400
    slice_s: float = SLICE_S

    @property
    def lease_s(self) -> int:
        """How long a claimed delivery stays ``delivering`` before another pump may take it (seconds)."""
        return int(self.timeout_s * 2 + 30)

    def next_delay(self, attempts: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after ``attempts`` failed ones; ``None``: give up."""
        if attempts > len(self.schedule):
            return None
        delay = self.schedule[attempts - 1]
        if retry_after is not None:  # honoured within [delay, 2 × delay], as Svix does
            delay = min(max(delay, retry_after), 2 * delay)
        return delay * (1 + random.random() * JITTER)


@dataclass(frozen=True)
class Endpoint:
    """What a pump needs of its endpoint."""

    id: int
    company_id: int
    url: str
    enabled: bool
    secrets: tuple[str, ...]
    rate_per_second: int
    max_in_flight: int

    @classmethod
    def from_row(cls, row: dict[str, Any], now: dt.datetime) -> Endpoint:
        """From an ``ENDPOINT`` row: the current secret, and the previous one until it expires."""
        secrets = [row["secret"]]
        expires = row["previous_secret_expires_at"]
        if row["previous_secret"] and expires is not None and expires > now:
            secrets.append(row["previous_secret"])
        return cls(
            id=row["id"],
            company_id=row["company_id"],
            url=row["url"],
            enabled=row["enabled"],
            secrets=tuple(secrets),
            rate_per_second=row["rate_per_second"],
            max_in_flight=row["max_in_flight"],
        )


@dataclass(frozen=True)
class Attempt:
    """The result of one HTTP attempt."""

    status: int | None
    error: str | None
    latency_ms: int
    excerpt: str | None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """2xx: delivered (3xx is a failure: redirects are not followed)."""
        return self.status is not None and 200 <= self.status < 300

    def summary(self) -> str:
        """One line for the endpoint's last failure."""
        return f"HTTP {self.status}" if self.status is not None else (self.error or "error")


@dataclass(frozen=True)
class Outcome:
    """A finished attempt of a claimed delivery, to record."""

    delivery_id: int
    endpoint_id: int
    event_id: int
    event_type: str
    attempt_no: int
    at: dt.datetime
    attempt: Attempt
    #: ``delivered``, ``pending`` (next attempt at ``next_at``) or ``failed`` (given up).
    state: str
    next_at: dt.datetime | None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


async def attempt(
    http: EndpointClient,
    url: str,
    message_id: str,
    payload: bytes,
    signing_secrets: Sequence[str],
    *,
    timeout_s: float,
) -> Attempt:
    """POST one signed delivery; never raises for anything the receiver or the network does."""
    started = time.monotonic()
    headers = signing.headers(message_id, payload, signing_secrets, now=dt.datetime.now(dt.UTC))
    try:
        response = await http.post(url, content=payload, headers=headers, timeout_s=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], _ms(started), None)
    except (OSError, ValueError, OverflowError) as exc:  # a URL httpx refuses, an address the guard refuses
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], _ms(started), None)
    excerpt = response.content[:EXCERPT_BYTES].decode("utf-8", "replace") if response.content else None
    return Attempt(response.status_code, None, _ms(started), excerpt, _retry_after(response))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class Pacer:
    """At most ``rate`` starts per second (a token bucket with a burst of one second's worth)."""

    def __init__(self, rate: int) -> None:
        self.rate = max(1, rate)
        self._tokens = float(self.rate)
        self._at = time.monotonic()

    async def wait(self) -> None:
        """Return when one more start is allowed."""
        while True:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


class PumpLocks:
    """Session advisory locks of the endpoints this process pumps, all on one Postgres connection.

    If that connection breaks, Postgres has released every lock on it: :meth:`holds` turns false for locks
    taken before (their pumps stop claiming), and the next acquire reconnects. Session locks are re-entrant
    within their session, so the endpoints this process pumps are also kept in a set: a second pump job of
    the same endpoint in the same process is refused here, as one in another process is by Postgres.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.generation = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._mutex = asyncio.Lock()
        self._held: set[int] = set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._held.clear()  # released by Postgres with the connection
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=5,
                # the server notices a vanished host within ~25 s and releases its locks
                options="-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
            )
            self.generation += 1
        return self._conn

    async def try_acquire(self, endpoint_id: int) -> int | None:
        """Take the endpoint's lock; the generation it was taken in, or ``None`` if another pump has it."""
        async with self._mutex:
            conn = await self._connection()
            if endpoint_id in self._held:
                return None
            cursor = await conn.execute(store.TRY_PUMP_LOCK, (store.PUMP_LOCK_BASE + endpoint_id,))
            row = await cursor.fetchone()
            if not (row and row[0]):
                return None
            self._held.add(endpoint_id)
            return self.generation

    def holds(self, generation: int) -> bool:
        """Whether a lock taken in ``generation`` is still held."""
        conn = self._conn
        return generation == self.generation and conn is not None and not conn.closed and not conn.broken

    async def release(self, endpoint_id: int, generation: int) -> None:
        """Release the endpoint's lock (a lost connection already released it)."""
        if not self.holds(generation):
            return
        async with self._mutex:
            assert self._conn is not None
            self._held.discard(endpoint_id)
            try:
                await self._conn.execute(store.PUMP_UNLOCK, (store.PUMP_LOCK_BASE + endpoint_id,))
            except psycopg.Error:
                logger.warning("could not release the pump lock of endpoint %s", endpoint_id, exc_info=True)

    async def aclose(self) -> None:
        """Close the connection (releasing every lock)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


@dataclass
class DispatcherContext:
    """Per-process resources of the event dispatcher, created on the worker's event loop."""

    pool: AsyncConnectionPool
    http: EndpointClient
    redis: aioredis.Redis
    kicks: Kicks
    locks: PumpLocks
    settings: DispatchSettings
    #: ``enqueue(message, delay_ms)`` for the delayed wake-ups (Dramatiq's delay queue).
    enqueue_delayed: Callable[[Message[Any], int], Awaitable[None]]
    stopping: bool = False
    #: Endpoints this process disabled (410, failing too long): their pumps stop at once.
    disabled: set[int] = field(default_factory=set)
    #: The pumps running in this process, by endpoint: set when this process's publisher has new deliveries
    #: for them (a pump in another process learns of them through the Redis kick instead).
    wakeups: dict[int, asyncio.Event] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    records: Coalescer[Outcome, None] = field(init=False)

    def __post_init__(self) -> None:
        self.records = Coalescer(self._record_batch)

    def wake_local(self, endpoint_ids: set[int]) -> None:
        """From any thread: wake the pumps of ``endpoint_ids`` that run in this process."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, endpoint_ids)

    def _wake(self, endpoint_ids: set[int]) -> None:
        for endpoint_id in endpoint_ids:
            event = self.wakeups.get(endpoint_id)
            if event is not None:
                event.set()

    async def _record_batch(self, outcomes: list[Outcome]) -> Sequence[None]:
        disabled = await record_outcomes(self.pool, outcomes, self.settings)
        for endpoint in disabled:
            self.disabled.add(endpoint["id"])
            alert_disabled(endpoint)
        for outcome in outcomes:
            if outcome.state == "failed":
                report_given_up(outcome)
        return [None] * len(outcomes)


# -- recording ------------------------------------------------------------------------------------------


#: Namespace of the Dramatiq message ids of replay jobs (one per delivery, so its ledger row is reused).
REDELIVERY_NAMESPACE = uuid.UUID("0d7f5c2e-8a61-4e3b-9c1d-2f4a6b8e0c13")


def redelivery_message(delivery_id: int) -> Message[Any]:
    """The job that a replay of the delivery's dead letter enqueues."""
    message = contracts.REDELIVER_EVENT.message(contracts.RedeliverEvent(delivery_id))
    return message.copy(message_id=str(uuid.uuid5(REDELIVERY_NAMESPACE, f"delivery:{delivery_id}")))


async def record_outcomes(
    pool: AsyncConnectionPool, outcomes: list[Outcome], settings: DispatchSettings
) -> list[dict[str, Any]]:
    """Record a batch of attempt outcomes in one transaction; returns the endpoints it disabled."""
    failed_endpoints = {o.endpoint_id: o.attempt.summary() for o in outcomes if not o.attempt.ok}
    succeeded = {o.endpoint_id for o in outcomes if o.attempt.ok}
    gone = sorted({o.endpoint_id for o in outcomes if o.attempt.status == 410})
    for endpoint_id in succeeded:
        failed_endpoints.pop(endpoint_id, None)  # one success in the batch: the endpoint works
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            store.RECORD_OUTCOMES,
            {
                "ids": [o.delivery_id for o in outcomes],
                "states": [o.state for o in outcomes],
                "next_at": [o.next_at for o in outcomes],
                "statuses": [o.attempt.status for o in outcomes],
                "errors": [o.attempt.error for o in outcomes],
                "at": [o.at for o in outcomes],
            },
            prepare=True,
        )
        recorded = await cursor.fetchall()
        await conn.execute(
            store.INSERT_ATTEMPTS,
            {
                "ids": [o.delivery_id for o in outcomes],
                "endpoints": [o.endpoint_id for o in outcomes],
                "attempts": [o.attempt_no for o in outcomes],
                "at": [o.at for o in outcomes],
                "statuses": [o.attempt.status for o in outcomes],
                "errors": [o.attempt.error for o in outcomes],
                "latencies": [o.attempt.latency_ms for o in outcomes],
                "excerpts": [o.attempt.excerpt for o in outcomes],
            },
            prepare=True,
        )
        ended = {
            (endpoint_id, conversation) for _, endpoint_id, conversation, state, _ in recorded if state != "pending"
        }
        if ended:
            await promote(conn, ended)
        if succeeded:
            await conn.execute(store.ENDPOINTS_SUCCEEDED, {"ids": sorted(succeeded)}, prepare=True)
        if failed_endpoints:
            await conn.execute(
                store.ENDPOINTS_FAILED,
                {"ids": list(failed_endpoints), "reasons": list(failed_endpoints.values())},
                prepare=True,
            )
        disabled: list[dict[str, Any]] = []
        if failed_endpoints or gone:
            disabling = conn.cursor(row_factory=dict_row)
            await disabling.execute(
                store.DISABLE_ENDPOINTS,
                {"gone": gone, "failed": list(failed_endpoints), "disable_after_s": settings.disable_after_s},
            )
            disabled = await disabling.fetchall()
        given_up = [o for o in outcomes if o.state == "failed"]
        if given_up:
            await _dead_letters(conn, given_up)
    return disabled


async def promote(conn: psycopg.AsyncConnection[Any], keys: set[tuple[int, str]]) -> list[int]:
    """Promote the next delivery of each (endpoint, conversation) with no head; returns endpoints to kick."""
    ordered = sorted(keys)
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(store.LOCK_CONVERSATIONS, {"locks": store.lock_keys(keys)}, prepare=True)
    await cursor.execute(
        store.PROMOTE,
        {"endpoints": [e for e, _ in ordered], "conversations": [c for _, c in ordered]},
        prepare=True,
    )
    return sorted({row[0] for row in await cursor.fetchall()})


async def _dead_letters(conn: psycopg.AsyncConnection[Any], given_up: list[Outcome]) -> None:
    messages = [redelivery_message(o.delivery_id) for o in given_up]
    await conn.execute(
        store.RECORD_DEAD_LETTERS,
        {
            "queue": contracts.REDELIVER_EVENT.queue_name,
            "actor": contracts.REDELIVER_EVENT.actor_name,
            "message_ids": [m.message_id for m in messages],
            "kwargs": [Jsonb(m.kwargs) for m in messages],
            "messages": [Jsonb(m.asdict()) for m in messages],
            "errors": [
                f"{event_id(o.event_id)} ({o.event_type}) to endpoint {o.endpoint_id}: {o.attempt.summary()} "
                f"after {o.attempt_no} attempts"
                for o in given_up
            ],
            "attempts": [o.attempt_no for o in given_up],
            "first_at": [None for _ in given_up],
            "last_at": [o.at for o in given_up],
        },
    )


def report_given_up(outcome: Outcome) -> None:
    """One Sentry event per delivery given up (grouped like every dead letter: actor + error type)."""
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["zapq-dead-letter", contracts.REDELIVER_EVENT.actor_name, "EventDeliveryError"]
        scope.set_tag("queue", contracts.REDELIVER_EVENT.queue_name)
        scope.set_tag("actor", contracts.REDELIVER_EVENT.actor_name)
        scope.set_tag("reason", "delivery_failed")
        scope.set_extra("endpoint_id", outcome.endpoint_id)
        scope.set_extra("event_id", event_id(outcome.event_id))
        scope.set_extra("attempts", outcome.attempt_no)
        scope.level = "error"
        sentry_sdk.capture_message(f"dead letter: event delivery to endpoint {outcome.endpoint_id} given up")


def alert_disabled(endpoint: dict[str, Any]) -> None:
    """A Sentry alert for an endpoint disabled by zapq (410, or failing for the whole disable period)."""
    logger.warning("webhook endpoint %s disabled: %s", endpoint["id"], endpoint["disabled_reason"])
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["zapq-endpoint-disabled", str(endpoint["id"])]
        scope.set_tag("endpoint_id", str(endpoint["id"]))
        scope.set_tag("company_id", str(endpoint["company_id"]))
        scope.set_extra("reason", endpoint["disabled_reason"])
        scope.level = "warning"
        sentry_sdk.capture_message(f"webhook endpoint {endpoint['id']} disabled: {endpoint['disabled_reason']}")


# -- the pump -------------------------------------------------------------------------------------------


async def load_endpoint(pool: AsyncConnectionPool, endpoint_id: int) -> Endpoint | None:
    """The endpoint's current settings, or ``None`` when it was deleted."""
    async with pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(store.ENDPOINT, {"id": endpoint_id}, prepare=True)
        row = await cursor.fetchone()
    return Endpoint.from_row(row, dt.datetime.now(dt.UTC)) if row else None


async def _claim(ctx: DispatcherContext, endpoint_id: int, limit: int) -> list[dict[str, Any]]:
    async with ctx.pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(
            store.CLAIM, {"endpoint": endpoint_id, "limit": limit, "lease_s": ctx.settings.lease_s}, prepare=True
        )
        return await cursor.fetchall()


async def deliver_one(
    ctx: DispatcherContext, endpoint: Endpoint, claimed: dict[str, Any], trace: str | None = None
) -> None:
    """Attempt one claimed delivery and record the outcome (in a batch with the others).

    ``trace``: the event's ``traceparent`` — the attempt is then an ``event.deliver`` span of that trace."""
    payload = signing.body(claimed["type"], claimed["occurred_at"], claimed["data"])
    attempt_no = claimed["attempts"] + 1
    traced = (
        tracing.span(
            "event.deliver",
            parent=trace,
            ids={"zapq.event": claimed["event_id"]},
            attributes={"zapq.event.type": claimed["type"], "zapq.endpoint": endpoint.id, "zapq.attempt": attempt_no},
        )
        if trace
        else _UNTRACED
    )
    with traced:
        result = await attempt(
            ctx.http,
            endpoint.url,
            event_id(claimed["event_id"]),
            payload,
            endpoint.secrets,
            timeout_s=ctx.settings.timeout_s,
        )
        if trace:
            tracing.annotate(**{"http.response.status_code": result.status})
            if not result.ok:
                tracing.fail(f"HTTP {result.status}" if result.status is not None else "no answer")
    now = dt.datetime.now(dt.UTC)
    if result.ok:
        state, next_at = "delivered", None
    else:
        delay = ctx.settings.next_delay(attempt_no, result.retry_after)
        if delay is None:
            state, next_at = "failed", None
        else:
            state, next_at = "pending", now + dt.timedelta(seconds=delay)
    await ctx.records(
        Outcome(
            delivery_id=claimed["id"],
            endpoint_id=endpoint.id,
            event_id=claimed["event_id"],
            event_type=claimed["type"],
            attempt_no=attempt_no,
            at=now,
            attempt=result,
            state=state,
            next_at=next_at,
        )
    )


async def pump(ctx: DispatcherContext, endpoint_id: int) -> None:
    """Deliver the endpoint's due events until none is due (or the slice ends), as its only pump."""
    try:
        await ctx.kicks.started(ctx.redis, endpoint_id)
        generation = await ctx.locks.try_acquire(endpoint_id)
        if generation is None:
            return  # another pump runs; the kick's dirty mark reaches it
        try:
            async with ctx.pool.connection() as conn:
                await conn.execute(store.RECLAIM, {"endpoint": endpoint_id})
            more = await _run(ctx, endpoint_id, generation)
        finally:
            await ctx.locks.release(endpoint_id, generation)
        if more or await ctx.kicks.take_dirty(ctx.redis, endpoint_id):
            await ctx.kicks.kick_async(ctx.redis, [endpoint_id])
        else:
            await _schedule_wake(ctx, endpoint_id)
    except (psycopg.OperationalError, PoolTimeout, redis.RedisError) as exc:
        # Postgres or Redis unavailable: deliveries are rows in Postgres, and the periodic sweep (or the next
        # kick) runs this endpoint's pump again once they are due and both answer.
        logger.warning("endpoint %s: pump stopped (%s unavailable)", endpoint_id, type(exc).__module__.split(".")[0])


async def _run(ctx: DispatcherContext, endpoint_id: int, generation: int) -> bool:
    """The pump's loop; True when it stopped with work left (slice over, shutting down, lock lost)."""
    loop = asyncio.get_running_loop()
    endpoint = await load_endpoint(ctx.pool, endpoint_id)
    if endpoint is None or not endpoint.enabled:
        return False
    ctx.disabled.discard(endpoint_id)  # enabled again since
    pacer = Pacer(endpoint.rate_per_second)
    deadline = loop.time() + ctx.settings.slice_s
    in_flight: set[asyncio.Task[None]] = set()
    claim, last_claim, last_dirty_check, loaded_at = True, 0.0, 0.0, loop.time()
    failure: BaseException | None = None
    gone = False  # the endpoint was disabled or deleted: nothing more to do for it
    woken = ctx.wakeups[endpoint_id] = asyncio.Event()
    wake = loop.create_task(woken.wait())
    try:
        while True:
            now = loop.time()
            gone = gone or endpoint_id in ctx.disabled
            stopping = gone or ctx.stopping or now > deadline or not ctx.locks.holds(generation) or failure is not None
            if not stopping:
                if now - loaded_at > RELOAD_S:
                    endpoint = await load_endpoint(ctx.pool, endpoint_id)
                    loaded_at = now
                    if endpoint is None or not endpoint.enabled:
                        gone = stopping = True
                    elif endpoint.rate_per_second != pacer.rate:
                        pacer = Pacer(endpoint.rate_per_second)
                if not claim and now - last_claim > RECHECK_S:
                    claim = True
                if not claim and now - last_dirty_check > 0.02:
                    last_dirty_check = now
                    claim = await ctx.kicks.take_dirty(ctx.redis, endpoint_id)
            if not stopping and endpoint is not None:
                room = endpoint.max_in_flight - len(in_flight)
                if claim and room > 0 and (not in_flight or room >= max(1, endpoint.max_in_flight // 8)):
                    claimed = await _claim(ctx, endpoint_id, room)
                    last_claim = loop.time()
                    claim = len(claimed) == room
                    traced = tracing.enabled()  # an attempt continues the context its event's row keeps
                    for row in claimed:
                        await pacer.wait()
                        trace = row.get("traceparent") if traced else None
                        in_flight.add(loop.create_task(deliver_one(ctx, endpoint, row, trace)))
            if not in_flight:
                if stopping:
                    return not gone
                if claim:
                    continue
                if await ctx.kicks.take_dirty(ctx.redis, endpoint_id):
                    claim = True
                    continue
                return False
            waiting: set[asyncio.Future[Any]] = {*in_flight, wake}
            done, _ = await asyncio.wait(waiting, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            if wake in done:  # this process published new deliveries for the endpoint
                done.discard(wake)
                woken.clear()
                wake = loop.create_task(woken.wait())
                claim = True
            for task in done:
                in_flight.discard(task)  # type: ignore[arg-type]
                if not task.cancelled() and task.exception() is not None and failure is None:
                    failure = task.exception()  # recording failed (Postgres): stop claiming, drain, re-raise
            if done:
                claim = True  # a finished head may have promoted the next of its conversation
    finally:
        wake.cancel()
        if ctx.wakeups.get(endpoint_id) is woken:
            del ctx.wakeups[endpoint_id]
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        if failure is not None:
            raise failure


async def _schedule_wake(ctx: DispatcherContext, endpoint_id: int) -> None:
    async with ctx.pool.connection() as conn:
        row = await (await conn.execute(store.NEXT_DUE, {"endpoint": endpoint_id})).fetchone()
    due: dt.datetime | None = row[0] if row else None
    if due is None:
        return
    wait_s = min(MAX_WAKE_S, max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds()))
    if await ctx.kicks.need_wake(ctx.redis, endpoint_id, time.time() + wait_s):
        await ctx.enqueue_delayed(Kicks.pump_job(endpoint_id), int(wait_s * 1000))


async def redeliver(ctx: DispatcherContext, delivery_id: int) -> bool:
    """Replay one delivery (its dead letter's job): open again with fresh attempts, in its conversation's turn.
    False when it is not delivered or failed (still open, or gone)."""
    async with ctx.pool.connection() as conn, conn.transaction():
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(store.REOPEN_DELIVERY, {"id": delivery_id})
        row = await cursor.fetchone()
        if row is None:
            return False
        kick = await promote(conn, {(row[0], row[1])})
    await ctx.kicks.kick_async(ctx.redis, kick)
    return True
