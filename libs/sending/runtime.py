"""The sender's per-process resources, created on the worker's event loop and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from dramatiq import Broker, Middleware
from dramatiq.asyncio import get_event_loop_thread

from libs.campaigns.lanes import Lanes
from libs.db.engine import async_pool
from libs.media.runtime import media_http_client
from libs.media.storage import storage_from_settings
from libs.outbound import AddressGuard
from libs.providers.transport import provider_http_client
from libs.redis_clients import async_redis_client
from libs.rules.budget import Budget
from libs.secrets import Secrets
from libs.sending.holds import release_ended_async
from libs.sending.media_ref import MediaResolver
from libs.sending.send import SenderContext
from libs.sending.throttle import Throttle
from libs.settings import Settings

#: Provider calls: connect fast, allow Meta its usual latency, never hang a job.
PROVIDER_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=10.0)
#: Concurrent provider calls per process and provider host (Graph API, each bridge).
PROVIDER_CONNECTIONS = 512


logger = logging.getLogger(__name__)


def bridge_http_client(settings: Settings) -> httpx.AsyncClient | None:
    """The HTTP client for Baileys bridges in ``prod``: every connection it opens is to an address the outbound
    address guard resolved and checked (loopback, private, link-local, metadata refused unless allowlisted),
    so a bridge name that re-resolves to an internal address (DNS rebinding) is refused at connect time.
    ``None`` in ``dev`` and ``test`` (the guard is open there): bridges share the provider client."""
    guard = AddressGuard.for_environment(settings.env, settings.outbound_allowed)
    if not guard.block_private:
        return None
    return provider_http_client(timeout=PROVIDER_TIMEOUT, max_connections=PROVIDER_CONNECTIONS, resolve=guard.resolve)


#: How often provider call counts are added to Redis.
METRICS_FLUSH_S = 1.0
#: How often held sends are checked for a hold that ended (a connection active again, a campaign resumed).
HOLD_POLL_S = 1.0


class SenderResources(Middleware):
    """Owns the sender's async Postgres pool and HTTP client for one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.budget = Budget.from_settings(settings)
        self._context: SenderContext | None = None
        self._lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None

    async def context(self) -> SenderContext:
        """The process's :class:`SenderContext`, created on first use (on the event loop)."""
        if self._context is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._context is None:
                    pool = async_pool(self.settings)
                    await pool.open(wait=False)
                    http = provider_http_client(
                        timeout=PROVIDER_TIMEOUT,
                        max_connections=PROVIDER_CONNECTIONS,
                        transport=self.settings.http_transport,
                    )
                    client = async_redis_client(self.settings)
                    media = MediaResolver(
                        pool=pool,
                        http=media_http_client(),
                        storage=storage_from_settings(self.settings),
                        secrets=Secrets(self.settings.secrets_key_list),
                        graph_url=self.settings.meta_graph_url,
                        api_version=self.settings.meta_api_version,
                    )
                    self._context = SenderContext(
                        media=media,
                        pool=pool,
                        http=http,
                        throttle=Throttle(client, self.settings.redis_namespace),
                        graph_url=self.settings.meta_graph_url,
                        api_version=self.settings.meta_api_version,
                        secrets=Secrets(self.settings.secrets_key_list),
                        bridge_http=bridge_http_client(self.settings),
                        lanes=Lanes(self.settings.redis_namespace, buffer=self.settings.campaign_feed_buffer),
                        reconcile_seconds=self.settings.send_reconcile_seconds,
                        hold_max_age_s=self.settings.hold_max_age_seconds,
                    )
                    self._flusher = asyncio.create_task(self._flush_metrics(self._context))
                    self._releaser = asyncio.create_task(self._release_holds(self._context))
        return self._context

    async def _flush_metrics(self, context: SenderContext) -> None:
        """Add this process's provider call counts to Redis every second (for ``GET /metrics``)."""
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            try:
                await context.metrics.flush(context.throttle.client, self.settings.redis_namespace)
            except Exception:  # a Redis blip loses one second of metrics, never a send
                logger.warning("could not flush provider metrics", exc_info=True)

    async def _release_holds(self, context: SenderContext) -> None:
        """Release held sends whose hold ended, and those past the maximum age, and campaign sends waiting for
        messaging-limit budget as room frees up (:mod:`libs.rules.budget`), about every ``HOLD_POLL_S``."""
        failing = False
        while True:
            await asyncio.sleep(HOLD_POLL_S)
            try:
                await release_ended_async(context.pool, context.throttle.client, context.holds)
                if context.lanes is not None:  # campaign sends waiting for tier budget, as room frees up
                    await self.budget.release_async(context.throttle.client, context.lanes)
            except Exception:  # Postgres or Redis unavailable: the next poll (or the scheduler's sweep) does it
                if not failing:
                    logger.warning("could not check held sends", exc_info=True)
                failing = True
            else:
                failing = False

    async def aclose(self) -> None:
        """Close the pool and the HTTP client."""
        if self._context is not None:
            context, self._context = self._context, None
            for task in (self._flusher, self._releaser):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(Exception):
                await context.metrics.flush(context.throttle.client, self.settings.redis_namespace)
            await context.http.aclose()
            if context.media is not None:
                await context.media.http.aclose()
                context.media.storage.close()
            if context.bridge_http is not None:
                await context.bridge_http.aclose()
            await context.throttle.client.aclose()
            await context.pool.close()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Close on the event loop once the worker threads have finished their in-flight sends.

        Not ``before_worker_shutdown``: batching worker threads keep running their in-flight jobs after it,
        and a send whose client or pool was closed under it could not record the provider's answer. This
        middleware is added after ``AsyncIO``, so its ``after_`` hook runs first, before the loop stops.
        """
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and self._context is not None:
            loop_thread.run_coroutine(self.aclose())
