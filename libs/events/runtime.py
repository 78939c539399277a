"""The event dispatcher's per-process resources: created on the worker's event loop, closed at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from dramatiq import Broker, Message, Middleware
from dramatiq.asyncio import get_event_loop_thread

from libs.db.engine import async_pool
from libs.events.client import EndpointClient
from libs.events.dispatch import READ_BYTES as DISPATCH_READ_BYTES
from libs.events.dispatch import DispatcherContext, DispatchSettings, PumpLocks
from libs.events.kicks import Kicks
from libs.outbound import AddressGuard
from libs.providers.transport import LeanTransport
from libs.redis_clients import async_redis_client
from libs.settings import Settings

#: Connections per endpoint host: enough for an endpoint's in-flight limit.
MAX_CONNECTIONS_PER_HOST = 256
#: Longest wait for a connection to an endpoint (seconds; the whole attempt is bounded by its timeout too).
CONNECT_TIMEOUT_S = 5.0


def dispatch_settings(settings: Settings) -> DispatchSettings:
    """The delivery policy of ``settings``."""
    return DispatchSettings(
        schedule=settings.event_retry_delays,
        timeout_s=settings.event_timeout_seconds,
        disable_after_s=settings.event_disable_after_hours * 3600,
    )


def endpoint_http_client(settings: Settings, *, max_connections: int = MAX_CONNECTIONS_PER_HOST) -> EndpointClient:
    """The HTTP client for customers' endpoints: no cookies, no redirects, answers read up to a cap, every
    connection through the outbound address guard, the delivery timeout."""
    guard = AddressGuard.for_environment(settings.env, settings.outbound_allowed)
    transport = LeanTransport(
        max_connections=max_connections,
        max_body_bytes=DISPATCH_READ_BYTES,
        truncate_body=True,
        resolve=guard.resolve,
    )
    return EndpointClient(transport, connect_timeout_s=CONNECT_TIMEOUT_S)


class DispatcherResources(Middleware):
    """Owns the dispatcher's pool, HTTP client, Redis client and pump locks for one worker process."""

    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.settings = settings
        self.broker = broker
        self._context: DispatcherContext | None = None
        self._lock: asyncio.Lock | None = None

    async def context(self) -> DispatcherContext:
        """The process's :class:`DispatcherContext`, created on first use (on the event loop)."""
        if self._context is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._context is None:
                    pool = async_pool(self.settings)
                    await pool.open(wait=False)
                    self._context = DispatcherContext(
                        pool=pool,
                        http=endpoint_http_client(self.settings),
                        redis=async_redis_client(self.settings),
                        kicks=Kicks(self.settings.redis_namespace),
                        locks=PumpLocks(self.settings.libpq_url),
                        settings=dispatch_settings(self.settings),
                        enqueue_delayed=self._enqueue_delayed,
                        loop=asyncio.get_running_loop(),
                    )
        return self._context

    def wake_local(self, endpoint_ids: set[int]) -> None:
        """From the publisher's thread: wake this process's pumps of ``endpoint_ids``, if any run."""
        if self._context is not None:
            self._context.wake_local(endpoint_ids)

    async def _enqueue_delayed(self, message: Message[Any], delay_ms: int) -> None:
        await asyncio.to_thread(self.broker.enqueue, message, delay=delay_ms)

    async def aclose(self) -> None:
        """Close everything (releasing the pump locks)."""
        if self._context is not None:
            context, self._context = self._context, None
            await context.locks.aclose()
            await context.http.aclose()
            await context.redis.aclose()
            await context.pool.close()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Pumps stop claiming, finish what is in flight and hand over (the worker waits for them)."""
        if self._context is not None:
            self._context.stopping = True

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Close on the event loop once the in-flight pumps have finished (as the sender does)."""
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and self._context is not None:
            loop_thread.run_coroutine(self.aclose())
