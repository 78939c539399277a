"""Group commit at the webhook edge: concurrent requests share one INSERT, then one enqueue + one UPDATE.

Each request still gets its answer only after *its* row is committed; what changes is that the requests
arriving while a commit is in flight are written together by the next one, so Postgres and Redis see a
round trip per batch rather than per webhook. After the commit the accepted ids are enqueued on
``webhooks`` — as groups that a worker applies in one transaction each — and marked ``enqueued`` in the
background (one pipeline, one UPDATE); if that fails, the rows
stay ``received`` and the outbox sweep enqueues them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from libs import contracts
from libs.enqueue import enqueue_many_async
from libs.ingest import store
from libs.ingest.store import Accepted
from libs.whatsapp import meta_dedup_key

logger = logging.getLogger(__name__)

#: Most webhooks written by one INSERT.
MAX_BATCH = 256
#: Most webhooks applied by one worker job (one transaction).
WORKER_GROUP = 32


def processing_jobs(webhook_ids: list[int]) -> list[Any]:
    """The jobs that apply ``webhook_ids``: one ``process_webhook`` for a single webhook, else groups of up to
    ``WORKER_GROUP`` (``process_webhooks``: one transaction each)."""
    if len(webhook_ids) == 1:
        return [contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(webhook_ids[0]))]
    return [
        contracts.PROCESS_WEBHOOKS.message(contracts.ProcessWebhooks(webhook_ids[start : start + WORKER_GROUP]))
        for start in range(0, len(webhook_ids), WORKER_GROUP)
    ]


@dataclass
class _Pending:
    source: str
    key: str
    body: bytes
    future: asyncio.Future[Accepted] = field(repr=False)


class WebhookWriter:
    """Accept webhooks durably in shared transactions (one writer task per process)."""

    def __init__(self, pool: AsyncConnectionPool, redis: aioredis.Redis, namespace: str) -> None:
        self.pool = pool
        self.redis = redis
        self.namespace = namespace
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def accept(self, source: str, body: bytes) -> Accepted:
        """Store ``body`` durably; returns its id, or a duplicate marker. Raises when Postgres fails."""
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(source, meta_dedup_key(body), body, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wakeup.set()
        return await future

    async def drain(self) -> None:
        """Wait until every accepted webhook so far has been handed to Redis (or given up on)."""
        while self._pending or self._background:
            self._wakeup.set()
            await asyncio.gather(*self._background, return_exceptions=True)
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Finish what is queued and the background enqueues."""
        while self._pending:
            await asyncio.sleep(0)
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            async with self.pool.connection() as conn:
                rows = await store.insert_many(
                    conn, [p.source for p in batch], [p.key for p in batch], [p.body for p in batch]
                )
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        created = {(source, key): webhook_id for webhook_id, source, key in rows}
        accepted_ids = []
        for pending in batch:
            webhook_id = created.pop((pending.source, pending.key), None)  # one request per new row wins
            if webhook_id is not None:
                accepted_ids.append(webhook_id)
            if not pending.future.done():
                pending.future.set_result(Accepted(webhook_id))
        if accepted_ids:
            task = asyncio.create_task(self._enqueue(accepted_ids))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

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
