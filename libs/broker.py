"""Build the Redis broker and its middleware stack from settings: the only Dramatiq wiring in zapq.

Each service's ``__init__`` calls :func:`setup_broker` after ``sentry_sdk.init()``. The stack is
Dramatiq's defaults with ``Retries`` replaced by zapq's :class:`RetryMiddleware`, plus the poison guard,
prompt dead-worker recovery and asyncio support for async actors.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, TimeLimit

from libs.middleware import DeadWorkerRecovery, PoisonGuard, RetryMiddleware
from libs.middleware.concurrency import AsyncBatching, UvloopAsyncIO
from libs.middleware.lifecycle import Lifecycle
from libs.middleware.liveness import Liveness
from libs.middleware.tracing import TraceContext
from libs.redis_broker import OrjsonEncoder, ZapqRedisBroker
from libs.redis_clients import identity, redis_client
from libs.runtime import GcTuning
from libs.settings import Settings

#: Time limit of an actor unless it declares its own (ms).
DEFAULT_TIME_LIMIT_MS = 60_000


def build_middleware(settings: Settings) -> list[Middleware]:
    """zapq's middleware stack, in order.

    Dramatiq's ``AgeLimit``, ``ShutdownNotifications``, ``Callbacks`` and ``Pipelines`` are left out: no
    zapq actor uses them and every middleware costs each job a few hook calls. Add them with ``extra=``.
    """
    stack: list[Middleware] = [
        TimeLimit(time_limit=DEFAULT_TIME_LIMIT_MS),
        CurrentMessage(),
        UvloopAsyncIO(),
        AsyncBatching(batch_size=settings.concurrent_jobs_per_thread),
        # Before RetryMiddleware: after-hooks run in reverse, so the retry outcome is known when it records.
        Lifecycle(),
        PoisonGuard(max_deliveries=settings.max_deliveries),
        RetryMiddleware(defer_budget=settings.defer_budget),
        DeadWorkerRecovery(),
        Liveness(directory=settings.stack_heartbeat_dir, stall_seconds=settings.worker_stall_seconds or None),
        TraceContext(),
    ]
    if settings.gc_tuning:
        stack.append(GcTuning())
    return stack


def build_broker(settings: Settings, *, extra: list[Middleware] | None = None) -> RedisBroker:
    """A new Redis broker for ``settings`` (not installed as the global one)."""
    dramatiq.set_encoder(OrjsonEncoder())
    broker = ZapqRedisBroker(
        client=redis_client(settings),
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        middleware=[*build_middleware(settings), *(extra or [])],
    )
    broker.zapq_identity = identity(settings)  # type: ignore[attr-defined]
    return broker


def setup_broker(settings: Settings) -> RedisBroker:
    """Install zapq's broker as the process's Dramatiq broker, reusing it if already installed.

    Several services imported into one process (tests, the demo) thus share one broker and their actors
    all register on it; ``dramatiq services.<name>`` still consumes only the queues its module declares.
    """
    try:
        current = dramatiq.get_broker()
    except Exception:  # pragma: no cover - get_broker builds a default broker when none is set
        current = None
    if isinstance(current, RedisBroker) and getattr(current, "zapq_identity", None) == identity(settings):
        return current
    broker = build_broker(settings)
    dramatiq.set_broker(broker)
    return broker
