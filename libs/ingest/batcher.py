"""Group commit at the webhook edge: concurrent requests share one INSERT, then one enqueue + one UPDATE.

Each request still gets its answer only after *its* row is committed; what changes is that the requests
arriving while a commit is in flight are written together by the next one (a :class:`libs.batching.Coalescer`
running one batch at a time), so Postgres and Redis see a round trip per batch rather than per webhook. After
the commit the accepted ids are enqueued on ``webhooks`` — as groups that a worker applies in one transaction
each — and marked ``enqueued`` in the background (one pipeline, one UPDATE); if that fails, the rows stay
``received`` and the outbox sweep enqueues them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from libs import contracts
from libs.batching import Coalescer
from libs.enqueue import enqueue_many_async
from libs.ingest import store
from libs.ingest.store import Accepted
from libs.tracing import annotate, detached, recorded_traceparent
from libs.whatsapp import meta_dedup_key

logger = logging.getLogger(__name__)

#: Most webhooks written by one INSERT.
MAX_BATCH = 256
#: Most webhooks applied by one worker job (one transaction).
WORKER_GROUP = 32


def processing_jobs(webhook_ids: list[int]) -> list[Any]:
    """The jobs that apply ``webhook_ids``: one ``process_webhook`` for a single webhook, else groups of up to
    ``WORKER_GROUP`` (``process_webhooks``: one transaction each). A webhook's trace context is in its row."""
    if len(webhook_ids) == 1:
        return [contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(webhook_ids[0]))]
    return [
        contracts.PROCESS_WEBHOOKS.message(contracts.ProcessWebhooks(webhook_ids[start : start + WORKER_GROUP]))
        for start in range(0, len(webhook_ids), WORKER_GROUP)
    ]


class _Webhook(NamedTuple):
    source: str
    key: str
    body: bytes
    trace: str | None = None


class WebhookWriter:
    """Accept webhooks durably in shared transactions (one INSERT in flight per process at a time)."""

    def __init__(self, pool: AsyncConnectionPool, redis: aioredis.Redis, namespace: str) -> None:
        self.pool = pool
        self.redis = redis
        self.namespace = namespace
        #: A body handed in is committed even if its request went away meanwhile (its sender retries anyway).
        self._writes: Coalescer[_Webhook, Accepted] = Coalescer(
            self._write, max_batch=MAX_BATCH, max_running=1, keep_abandoned=True
        )
        self._background: set[asyncio.Task[None]] = set()

    async def accept(self, source: str, body: bytes) -> Accepted:
        """Store ``body`` durably; returns its id, or a duplicate marker. Raises when Postgres fails."""
        # only a recorded request's context is kept with the row: a trace sampled out keeps none (its apply is not
        # traced)
        accepted = await self._writes(_Webhook(source, meta_dedup_key(body), body, recorded_traceparent()))
        if accepted.webhook_id is None:  # the request's span ends as the store does: only a duplicate is told
            annotate(**{"zapq.duplicate": True})
        return accepted

    async def drain(self) -> None:
        """Wait until every accepted webhook so far has been handed to Redis (or given up on)."""
        while self._writes.busy or self._background:
            await self._writes.drain()
            await asyncio.gather(*self._background, return_exceptions=True)
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Finish what is queued and the background enqueues."""
        await self._writes.drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _write(self, batch: list[_Webhook]) -> list[Accepted]:
        """Insert ``batch`` in one statement; per webhook its id, or ``None`` for a duplicate (raises on failure)."""
        async with self.pool.connection() as conn:
            rows = await store.insert_many(
                conn,
                [w.source for w in batch],
                [w.key for w in batch],
                [w.body for w in batch],
                [w.trace for w in batch],
            )
        created = {(source, key): webhook_id for webhook_id, source, key in rows}
        accepted_ids = []
        results = []
        for webhook in batch:
            webhook_id = created.pop((webhook.source, webhook.key), None)  # one request per new row wins
            if webhook_id is not None:
                accepted_ids.append(webhook_id)
            results.append(Accepted(webhook_id))
        if accepted_ids:
            with detached():  # no context on the jobs (each webhook keeps its own in its row), not this request's
                task = asyncio.create_task(self._enqueue(accepted_ids))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return results

    async def _enqueue(self, webhook_ids: list[int]) -> None:
        try:
            await enqueue_many_async(self.redis, self.namespace, processing_jobs(webhook_ids))
            async with self.pool.connection() as conn:
                await store.mark_enqueued(conn, webhook_ids)
        except Exception:
            logger.warning(
                "%d webhook(s) stored but not enqueued; the outbox sweep will enqueue them",
                len(webhook_ids),
                exc_info=True,
            )
