"""Queue stats and job lookup read from Redis (broker keys + lifecycle keys) and the dead-letter ledger.

Every read is O(1) or O(log n) per queue, whatever the queue depth: ``LLEN``, ``HLEN``, ``ZCARD``,
``SCARD`` of each live worker's ack set (the ack-set names are built from the heartbeat set's members,
never by scanning the keyspace), ``HMGET`` of 60 per-minute counters, the bounded recent-durations list,
and ``LINDEX 0`` for the oldest waiting job. All queues are read in one Lua call (:data:`STATS_LUA`).

The Redis logic is written once as "plans": generators that yield a batch of commands and receive their
results. :func:`run_plan` and :func:`run_plan_async` execute a plan on a sync or an asyncio client, so the
CLI and the ASGI API share it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from libs import contracts, lua
from libs.deadletters.store import dead_counts, dead_counts_async, ledger_row, ledger_row_async
from libs.ingest.store import unmatched_count, unmatched_count_async
from libs.keys import BrokerKeys, LaneKeys, LifecycleKeys

#: Every queue zapq uses, in display order.
QUEUES: tuple[str, ...] = (
    contracts.MESSAGES_URGENT,
    contracts.MESSAGES,
    contracts.MESSAGES_LOW,
    contracts.WEBHOOKS,
    contracts.CAMPAIGNS,
    contracts.DEAD_LETTER,
    contracts.MAINTENANCE,
    contracts.EVENT_DELIVERY,
    contracts.MEDIA,
)
#: Per-minute history returned by :func:`queue_stats_plan`.
WINDOW_MINUTES = 60
#: Minutes of completions the ETA of a waiting job is based on.
RATE_MINUTES = 5

Command = tuple[str, tuple[Any, ...]]
Plan = Generator[list[Command], list[Any], Any]


@dataclass
class QueueStats:
    """One queue right now, and its last hour."""

    queue: str
    waiting: int
    delayed: int
    in_flight: int
    #: Dead letters in the ledger not yet replayed (Postgres).
    dead: int
    #: Of ``waiting``, those still in the per-company fair lanes (:mod:`libs.campaigns.lanes`).
    in_lanes: int
    #: Messages in Dramatiq's own dead-letter zset (``<q>.XQ``: nacked, e.g. too old or of an unknown actor).
    broker_dead: int
    #: Oldest → newest, one per minute, the last entry being the current (partial) minute.
    completed_per_minute: list[int] = field(default_factory=list)
    failed_per_minute: list[int] = field(default_factory=list)
    #: Over the last hour, from the per-minute sums.
    mean_ms: float | None = None
    #: Over the last (up to 1,000) completed jobs.
    p95_ms: float | None = None
    #: Completions per second over the last :attr:`rate_window_s` seconds (``RATE_MINUTES`` minutes).
    rate_per_second: float = 0.0
    #: The window of ``rate_per_second``, in seconds (shown with it: "/s over the last 300 s").
    rate_window_s: int = RATE_MINUTES * 60
    #: Jobs completed / failed in the last *full* minute (the current one is still counting): the "per minute"
    #: figure the API, the CLI and the dashboard all show.
    done_last_minute: int = 0
    failed_last_minute: int = 0
    oldest_waiting_seconds: float | None = None
    completed_total: int = 0
    failed_total: int = 0
    dead_total: int = 0
    #: ``webhooks`` only: webhooks kept for numbers without a connection (``unmatched``), when Postgres was read.
    unmatched: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


#: What each figure of :class:`QueueStats` means, in the words every view labels it with (API docs, CLI, dashboard).
FIGURE_LABELS: dict[str, str] = {
    "waiting": "jobs waiting now (lanes included)",
    "delayed": "jobs scheduled for later now (retries, deferrals)",
    "in_flight": "jobs being worked on now",
    "dead": "dead letters not yet replayed",
    "done_last_minute": "jobs done in the last full minute",
    "failed_last_minute": "jobs failed in the last full minute",
    "rate_per_second": f"jobs done per second over the last {RATE_MINUTES * 60} s",
    "p95_ms": "p95 duration of the last 1,000 jobs, ms",
    "oldest_waiting_seconds": "age of the oldest waiting job, s",
}


def last_full(series: Sequence[int]) -> int:
    """The last full minute of a per-minute series whose last entry is the current, partial minute."""
    return int(series[-2]) if len(series) > 1 else 0


@dataclass
class JobInfo:
    """Where one job is: its lifecycle hash, read as the answer to "what happened to my job?"."""

    message_id: str
    state: str | None
    queue: str | None = None
    actor: str | None = None
    enqueued_at: float | None = None
    #: 1 = the next job a worker takes (waiting only; approximate, see ``libs.middleware.lifecycle``).
    position: int | None = None
    #: Seconds until it probably starts (waiting: position ÷ recent completion rate; delayed: until due).
    eta_seconds: float | None = None
    due_at: float | None = None
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: float | None = None
    failures: int = 0
    last_error_type: str | None = None
    last_error: str | None = None
    next_retry_at: float | None = None
    #: The ledger row of a dead job (id, reason, error, attempts, replayed_at …).
    dead_letter: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, times as ISO 8601 UTC."""
        data = asdict(self)
        for name in ("enqueued_at", "due_at", "started_at", "finished_at", "next_retry_at"):
            data[name] = iso(data[name])
        return data


def iso(value: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC."""
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat() if value is not None else None


def _int(value: Any) -> int:
    return int(float(value)) if value is not None else 0


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _rate(completed_by_minute: Sequence[int], now: float, minutes: int = RATE_MINUTES) -> float:
    """Completions per second over the last ``minutes`` (the last entry is the current partial minute)."""
    recent = completed_by_minute[-minutes:]
    elapsed = (len(recent) - 1) * 60 + (now % 60)
    return sum(recent) / elapsed if elapsed > 0 else 0.0


# -- plans ---------------------------------------------------------------------------------------------


#: Reads every queue's numbers inside Redis in one call (``libs/lua/queue_stats.lua``).
STATS_LUA = lua.source("queue_stats")


def queue_stats_plan(
    namespace: str,
    queues: Sequence[str],
    *,
    dead_counts: dict[str, int] | None = None,
    unmatched: int | None = None,
    now: float | None = None,
) -> Plan:
    """Stats of ``queues`` in one round trip (one Lua call); O(1)/O(log n) reads per queue, whatever the depth.

    In flight = the ``SCARD`` of each heartbeating worker's ack set for the queue: the set names are built
    from the heartbeat set's members, never found by scanning the keyspace.
    """
    now = time.time() if now is None else now
    keys, broker = LifecycleKeys(namespace), BrokerKeys(namespace)
    minute = int(now // 60)
    args: list[Any] = [
        broker.heartbeats,
        broker.acks_prefix,
        keys.job_prefix,
        minute - WINDOW_MINUTES + 1,
        WINDOW_MINUTES,
    ]
    for queue in queues:
        args += (
            broker.acks_suffix(queue),
            broker.queue(queue),
            broker.messages(queue),
            broker.delayed_messages(queue),
            broker.dead(queue),
            keys.stats_of(queue),
            keys.durations(queue),
            keys.totals(queue),
            LaneKeys(namespace, queue).backlog,
        )
    (rows,) = yield [("eval", (STATS_LUA, 0, *args))]
    stats: list[QueueStats] = []
    for queue, row in zip(queues, rows, strict=True):
        waiting, delayed, xq, in_flight, completed, failed, duration_sum, p95_ms, *totals, oldest, lanes = row
        done = sum(completed)
        since = _float(oldest)
        stats.append(
            QueueStats(
                queue=queue,
                waiting=int(waiting) + _int(lanes),
                in_lanes=_int(lanes),
                delayed=int(delayed),
                in_flight=int(in_flight),
                dead=(dead_counts or {}).get(queue, 0),
                broker_dead=int(xq),
                completed_per_minute=[int(v) for v in completed],
                failed_per_minute=[int(v) for v in failed],
                mean_ms=round(float(duration_sum) / done, 1) if done else None,
                p95_ms=_float(p95_ms),
                rate_per_second=round(_rate(completed, now), 3),
                done_last_minute=last_full([int(v) for v in completed]),
                failed_last_minute=last_full([int(v) for v in failed]),
                oldest_waiting_seconds=round(max(0.0, now - since), 3) if since is not None else None,
                completed_total=_int(totals[0]),
                failed_total=_int(totals[1]),
                dead_total=_int(totals[2]),
                unmatched=unmatched if queue == contracts.WEBHOOKS else None,
            )
        )
    return stats


def job_plan(namespace: str, message_id: str, *, now: float | None = None) -> Plan:
    """The lifecycle of one job: one round trip, two for a waiting job (its queue's progress)."""
    now = time.time() if now is None else now
    keys = LifecycleKeys(namespace)
    (raw,) = yield [("hgetall", (keys.job(message_id),))]
    fields = {_str(k): _str(v) for k, v in raw.items()}
    info = JobInfo(
        message_id=message_id,
        state=fields.get("state"),
        queue=fields.get("queue"),
        actor=fields.get("actor"),
        enqueued_at=_float(fields.get("enqueued_at")),
        worker=fields.get("worker"),
        started_at=_float(fields.get("started_at")),
        finished_at=_float(fields.get("finished_at")),
        duration_ms=_float(fields.get("duration_ms")),
        failures=_int(fields.get("failures")),
        last_error_type=fields.get("last_error_type"),
        last_error=fields.get("last_error"),
        next_retry_at=_float(fields.get("next_retry_at")),
    )
    if info.state in ("delayed", "failed", "deferred") and info.next_retry_at is not None:
        info.due_at = info.next_retry_at
        info.eta_seconds = round(max(0.0, info.next_retry_at - now), 3)
    if info.state == "waiting" and info.queue and fields.get("seq"):
        minute = int(now // 60)
        minutes = range(minute - RATE_MINUTES + 1, minute + 1)
        results = yield [
            ("get", (keys.taken(info.queue),)),
            *(("hget", (keys.stats(info.queue, m), "completed")) for m in minutes),
        ]
        info.position = max(1, _int(fields["seq"]) - _int(results[0]))
        rate = _rate([_int(v) for v in results[1:]], now)
        info.eta_seconds = round(info.position / rate, 3) if rate > 0 else None
    return info


def _pipeline(client: Any, commands: Any) -> Any:
    """One round trip's commands of a plan, queued on a pipeline of ``client`` (sync or asyncio)."""
    pipe = client.pipeline(transaction=False)
    for name, args in commands:
        getattr(pipe, name)(*args)
    return pipe


def run_plan(client: redis.Redis, plan: Plan) -> Any:
    """Execute ``plan`` with a sync client; returns its result."""
    try:
        commands = next(plan)
        while True:
            commands = plan.send(_pipeline(client, commands).execute())
    except StopIteration as done:
        return done.value


async def run_plan_async(client: aioredis.Redis, plan: Plan) -> Any:
    """Execute ``plan`` with an asyncio client; returns its result."""
    try:
        commands = next(plan)
        while True:
            commands = plan.send(await _pipeline(client, commands).execute())
    except StopIteration as done:
        return done.value


# -- the dead-letter ledger ------------------------------------------------------------------------------


def _ledger_dict(row: Sequence[Any]) -> dict[str, Any]:
    names = (
        "id",
        "queue",
        "actor",
        "reason",
        "error_type",
        "error_message",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "created_at",
        "replayed_at",
        "replay_count",
    )
    data = dict(zip(names, row, strict=True))
    for name in ("first_failed_at", "last_failed_at", "created_at", "replayed_at"):
        data[name] = data[name].isoformat() if data[name] is not None else None
    data["state"] = "replayed" if data["replayed_at"] else "dead"
    return data


def with_ledger(info: JobInfo, row: Sequence[Any] | None) -> JobInfo:
    """Complete ``info`` with the job's ledger row: a row not replayed means the job is dead."""
    if row is None:
        return info
    info.dead_letter = _ledger_dict(row)
    if info.dead_letter["state"] == "dead" and info.state in (None, "dead", "failed", "skipped"):
        info.state = "dead"
        info.queue = info.queue or info.dead_letter["queue"]
        info.actor = info.actor or info.dead_letter["actor"]
        info.failures = max(info.failures, int(info.dead_letter["attempts"]))
        info.last_error_type = info.last_error_type or info.dead_letter["error_type"]
        info.last_error = info.last_error or info.dead_letter["error_message"][:300]
        info.next_retry_at = info.due_at = info.eta_seconds = None
    return info


def needs_ledger(info: JobInfo) -> bool:
    """Whether the ledger may know more (the job is dead, failed, skipped or unknown to Redis)."""
    return info.state in (None, "dead", "failed", "skipped")


# -- entry points ----------------------------------------------------------------------------------------


def queue_stats(
    client: redis.Redis, namespace: str, db: Any | None = None, queues: Sequence[str] = QUEUES
) -> list[QueueStats]:
    """Stats of every queue (sync)."""
    counts = dead_counts(db) if db is not None else None
    kept = unmatched_count(db) if db is not None else None
    plan = queue_stats_plan(namespace, queues, dead_counts=counts, unmatched=kept)
    result: list[QueueStats] = run_plan(client, plan)
    return result


async def queue_stats_async(
    client: aioredis.Redis, namespace: str, pool: Any | None = None, queues: Sequence[str] = QUEUES
) -> list[QueueStats]:
    """Stats of every queue (asyncio)."""
    counts = await dead_counts_async(pool) if pool is not None else None
    kept = await unmatched_count_async(pool) if pool is not None else None
    plan = queue_stats_plan(namespace, queues, dead_counts=counts, unmatched=kept)
    result: list[QueueStats] = await run_plan_async(client, plan)
    return result


def job_lookup(client: redis.Redis, namespace: str, message_id: str, db: Any | None = None) -> JobInfo:
    """State, position and ETA of one job (sync); dead jobs are completed from the ledger."""
    info: JobInfo = run_plan(client, job_plan(namespace, message_id))
    if db is not None and needs_ledger(info):
        info = with_ledger(info, ledger_row(db, message_id))
    return info


async def job_lookup_async(client: aioredis.Redis, namespace: str, message_id: str, pool: Any | None = None) -> JobInfo:
    """State, position and ETA of one job (asyncio); dead jobs are completed from the ledger."""
    info: JobInfo = await run_plan_async(client, job_plan(namespace, message_id))
    if pool is not None and needs_ledger(info):
        info = with_ledger(info, await ledger_row_async(pool, message_id))
    return info
