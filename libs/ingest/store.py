"""Shared pieces of webhook acceptance (see :mod:`libs.ingest.batcher` for the group-committed writer)."""

from __future__ import annotations

from dataclasses import dataclass

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
