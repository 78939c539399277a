"""The media fetcher's per-process resources, created on the worker's event loop and closed at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from dramatiq import Broker, Middleware
from dramatiq.asyncio import get_event_loop_thread
from httpx_aiohttp import AiohttpTransport

from libs.db.engine import async_pool
from libs.media.fetch import FetchContext
from libs.media.storage import storage_from_settings
from libs.providers.trust import trust_context
from libs.secrets import Secrets
from libs.settings import Settings

#: Media calls: connect fast; a large file may take a while, but a stalled read gives up.
MEDIA_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=30.0)
#: Concurrent downloads per process (one per in-flight job at most).
MEDIA_CONNECTIONS = 128


def media_http_client() -> httpx.AsyncClient:
    """The HTTP client of media transfers: httpx over aiohttp (``httpx-aiohttp``), streamed — bodies are never
    read whole. Not the provider client's capped transports (they read answers whole); aiohttp rather than
    httpcore because it moves a 1 MB body for a fraction of the CPU (the bench's ``media`` scenario). Its
    mapping of a dropped connection to ``ConnectTimeout`` is harmless here: a download is a GET, and an upload
    sent twice only leaves Meta an unused copy."""
    limits = httpx.Limits(max_connections=MEDIA_CONNECTIONS, max_keepalive_connections=MEDIA_CONNECTIONS)
    transport = AiohttpTransport(verify=trust_context(), limits=limits)
    return httpx.AsyncClient(transport=transport, timeout=MEDIA_TIMEOUT, follow_redirects=True)


class FetcherResources(Middleware):
    """Owns the media fetcher's async Postgres pool, HTTP client and storage for one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context: FetchContext | None = None
        self._lock: asyncio.Lock | None = None

    async def context(self) -> FetchContext:
        """The process's :class:`FetchContext`, created on first use (on the event loop)."""
        if self._context is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._context is None:
                    pool = async_pool(self.settings, dict_rows=False)
                    await pool.open(wait=False)
                    self._context = FetchContext(
                        pool=pool,
                        http=media_http_client(),
                        storage=storage_from_settings(self.settings),
                        secrets=Secrets(self.settings.secrets_key_list),
                        graph_url=self.settings.meta_graph_url,
                        api_version=self.settings.meta_api_version,
                        retention_days=self.settings.media_retention_days,
                        max_bytes=self.settings.media_max_bytes,
                    )
        return self._context

    async def aclose(self) -> None:
        """Close the pool, the HTTP client and the storage."""
        if self._context is not None:
            context, self._context = self._context, None
            await context.http.aclose()
            context.storage.close()
            await context.pool.close()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Close on the event loop once the worker threads have finished their jobs."""
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and self._context is not None:
            loop_thread.run_coroutine(self.aclose())
