"""Shared pieces of webhook acceptance (see :mod:`libs.ingest.batcher` for the group-committed writer)."""

from __future__ import annotations

from dataclasses import dataclass

#: Rows a worker already holds (it took the job before this ran) are skipped rather than waited for: the
#: worker marks them processed, or, if it fails, they stay ``received`` and the outbox sweep enqueues them
#: again. Waiting would tie a pool connection of the edge to the worker's transaction.
MARK_ENQUEUED = """
UPDATE webhooks SET status = 'enqueued', enqueued_at = now()
WHERE id IN (SELECT id FROM webhooks WHERE id = ANY(%s) AND status = 'received' FOR UPDATE SKIP LOCKED)
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of storing one webhook: its row id, or ``None`` when it duplicates a stored one."""

    webhook_id: int | None

    @property
    def duplicate(self) -> bool:
        """True when an identical body was stored before."""
        return self.webhook_id is None
