"""Ordering of outbound message statuses: late or duplicated status webhooks never move a message back.

Forward order: ``queued`` < ``sending`` (= ``pending``, Baileys' name for it) < ``sent`` < ``delivered`` <
``read`` < ``played`` (a voice message played after being read). ``failed`` is terminal.

Meta gives no ordering guarantee: ``delivered`` may be skipped (read arrives alone), a retried webhook can
arrive days late, and a status can arrive before our send call returned. Decisions:

* A status only ever moves forward; the same status again is not an advance (idempotent re-delivery).
* ``failed`` is real after ``sent`` (Meta accepted the message, delivery then failed), so it applies from
  ``queued``/``sending``/``pending``/``sent``. Once ``delivered``/``read``/``played`` the message reached the
  phone, so a later ``failed`` is stale and ignored.
* Nothing moves a message out of ``failed``.
* Statuses outside this vocabulary (e.g. Baileys ``deleted``, or a new Meta value) never advance anything and
  nothing advances from them: callers handle them explicitly.
"""

from __future__ import annotations

FAILED = "failed"
"""The terminal failure status."""

STATUS_RANK: dict[str, int] = {
    "queued": 0,
    "sending": 1,
    "pending": 1,
    "sent": 2,
    "delivered": 3,
    "read": 4,
    "played": 5,
}
"""Rank of each non-terminal status in the forward order (equal rank = same stage)."""

_FAILED_BELOW_RANK = STATUS_RANK["delivered"]


def is_known_status(status: str) -> bool:
    """Return whether ``status`` belongs to the outbound status vocabulary (including ``failed``)."""
    return status == FAILED or status in STATUS_RANK


def status_advances(current: str, new: str) -> bool:
    """Return ``True`` only if applying ``new`` moves a message whose status is ``current`` forward.

    ``failed`` applies from any status below ``delivered``; nothing applies after ``failed``; an equal or
    lower status, and any unknown status on either side, returns ``False``.
    """
    current_rank = STATUS_RANK.get(current)
    if current_rank is None:  # failed (terminal) or unknown
        return False
    if new == FAILED:
        return current_rank < _FAILED_BELOW_RANK
    new_rank = STATUS_RANK.get(new)
    return new_rank is not None and new_rank > current_rank
