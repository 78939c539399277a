"""Durable acceptance of raw webhooks (asyncio, psycopg pool): the edge answers 200 only after this."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from libs.whatsapp import meta_dedup_key

INSERT_WEBHOOK = """
INSERT INTO webhooks (source, dedup_key, body, status)
VALUES (%s, %s, %s, 'received')
ON CONFLICT (source, dedup_key) DO NOTHING
RETURNING id
"""

MARK_ENQUEUED = """
UPDATE webhooks SET status = 'enqueued', enqueued_at = now()
WHERE id = ANY(%s) AND status = 'received'
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of storing one webhook: its row id, or ``None`` when it duplicates a stored one."""

    webhook_id: int | None

    @property
    def duplicate(self) -> bool:
        """True when an identical body was stored before."""
        return self.webhook_id is None


async def store_webhook(pool: AsyncConnectionPool, source: str, body: bytes) -> Accepted:
    """Insert the raw body durably (committed) and return its id; duplicates return ``None``."""
    async with pool.connection() as conn:
        cursor = await conn.execute(INSERT_WEBHOOK, (source, meta_dedup_key(body), body), prepare=True)
        row = await cursor.fetchone()
    return Accepted(row[0] if row else None)


async def mark_enqueued(pool: AsyncConnectionPool, webhook_ids: list[int]) -> None:
    """Record that these rows' jobs are in Redis (the outbox sweep skips them)."""
    if webhook_ids:
        async with pool.connection() as conn:
            await conn.execute(MARK_ENQUEUED, (webhook_ids,), prepare=True)
