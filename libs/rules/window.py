"""The customer-service window: free-form messages only within 24 h of the customer's last message.

Meta refuses a free-form (non-template) message sent more than 24 hours after the customer last wrote (code
131047). zapq keeps, per connection and contact, when the customer last wrote (:mod:`libs.rules.store`, from
inbound messages) and refuses such a message itself: ``POST /api/messages`` answers 422
``outside_service_window`` with the time the window closed, and a send that reaches the sender after its
window closed ends ``failed`` with that reason, without calling Meta. Templates are always allowed; Baileys
connections (no such rule) and connections with ``service_window: off`` are exempt.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from libs.rules.reasons import OUTSIDE_SERVICE_WINDOW

#: A connection's window rule: enforced (the default) or off (test numbers, load tests).
ENFORCE = "enforce"
OFF = "off"
MODES = (ENFORCE, OFF)


def applies(provider: str, mode: str, message_type: str) -> bool:
    """Whether the window rule applies to a ``message_type`` message on such a connection."""
    return provider == "meta" and mode == ENFORCE and message_type != "template"


def refusal(state: dict[str, Any] | None, message_type: str) -> tuple[str, dt.datetime | None] | None:
    """``(reason, closed_at)`` when the window ``state`` (:func:`libs.rules.store.window`) refuses a
    ``message_type`` message now, else ``None`` (``closed_at`` is ``None`` when the customer never wrote)."""
    if state is None or not applies(state["provider"], state["service_window"], message_type) or state["open"]:
        return None
    return OUTSIDE_SERVICE_WINDOW, state["closes_at"]


def describe(closed_at: dt.datetime | None) -> str:
    """The human half of an ``outside_service_window`` refusal."""
    if closed_at is None:
        return "the contact has never written to this number: only a template may start the conversation"
    when = closed_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return f"the 24 h customer-service window closed at {when}: send an approved template instead"
