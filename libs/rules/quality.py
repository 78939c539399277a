"""Quality signals: Meta flags a number, zapq stops its campaigns before Meta blocks it.

A ``phone_number_quality_update`` (or ``business_capability_update``) webhook updates the number's — or the
whole WABA's — limit tier, quality rating and throughput on its connection rows. When it *flags* the number —
an event such as ``FLAGGED`` or ``DOWNGRADE``, a quality rating ``RED``, a lower limit tier or throughput level
than before — in the same transaction (the ingest worker's):

* every running campaign of that number is paused with the reason (the pause action's own statement,
  :func:`libs.campaigns.actions.pause_campaigns_of_connections`; a ``campaign.status`` event with ``reason``);
* a ``connection.status`` event says why the number needs attention (its status stays ``active``: direct
  messages — replies to customers — continue);

and after the commit one Sentry event per flagged number (:func:`report`). Resuming the campaigns is the
operator's decision (``zapq campaign resume``); a number still RED does not pause them again. A new limit tier
reaches waiting campaign sends at the next budget refresh (:func:`libs.rules.tiers.refresh_limits`, every minute).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sentry_sdk
from sqlalchemy.orm import Session

from libs.campaigns.actions import pause_campaigns_of_connections
from libs.rules import limits_store
from libs.rules.limits import tier_limit
from libs.whatsapp.meta_account import CAPABILITY_FIELD, FLAGGING_EVENTS, AccountUpdate

logger = logging.getLogger(__name__)

#: Throughput levels, lowest first (Meta: STANDARD, HIGH; others are compared as unknown).
THROUGHPUT_RANK = {"NOT_APPLICABLE": 0, "STANDARD": 1, "HIGH": 2}


@dataclass
class QualityOutcome:
    """What the updates of one webhook did."""

    updated: int = 0
    #: Connection id → why it was flagged, and the campaigns paused for it.
    flagged: dict[int, str] = field(default_factory=dict)
    paused: list[int] = field(default_factory=list)
    #: Sentry messages to send once the transaction committed.
    alerts: list[str] = field(default_factory=list)


def _lower(now: int | None, before: int | None) -> bool:
    if now is None or before is None:
        return False
    if now == -1:  # unlimited
        return False
    return before == -1 or now < before


def flag_reason(update: AccountUpdate, before: dict[str, Any]) -> str | None:
    """Why ``update`` flags the number whose values were ``before`` (old_rating, old_tier, old_throughput), or
    ``None`` when it does not."""
    if update.event in FLAGGING_EVENTS:
        return f"Meta {update.field}: {update.event}"
    if update.quality_rating == "RED" and before.get("old_rating") != "RED":  # newly RED: not every poll again
        return "Meta quality rating RED"
    if _lower(tier_limit(update.current_limit), tier_limit(update.old_limit or before.get("old_tier"))):
        return f"Meta lowered the messaging limit to {update.current_limit}"
    old, new = before.get("old_throughput"), update.throughput_level
    if old in THROUGHPUT_RANK and new in THROUGHPUT_RANK and THROUGHPUT_RANK[new] < THROUGHPUT_RANK[old]:
        return f"Meta lowered the throughput from {old} to {new}"
    return None


def apply_account_updates(session: Session, updates: Iterable[AccountUpdate]) -> QualityOutcome:
    """Apply quality / capability updates in the caller's transaction (see the module docstring)."""
    outcome = QualityOutcome()
    for update in updates:
        display = "".join(ch for ch in update.display_phone_number or "" if ch.isdigit()) or None
        whole_waba = update.field == CAPABILITY_FIELD or (display is None and update.phone_number_id is None)
        values = {
            "phone_number_id": update.phone_number_id,
            "display": display,
            "whole_waba": whole_waba and bool(update.waba_id),
            "waba_id": update.waba_id or None,
            "rating": update.quality_rating,
            "tier": update.current_limit,
            "throughput": update.throughput_level,
            "event": update.event or update.field,
        }
        for row in limits_store.apply_quality(session, values):
            outcome.updated += 1
            reason = flag_reason(update, row)
            if reason is None:
                continue
            paused = [c["id"] for c in pause_campaigns_of_connections(session, [row["id"]], reason)]
            detail = f"{reason}; {len(paused)} running campaign(s) paused" if paused else reason
            limits_store.attention_event(session, row["id"], detail)
            outcome.flagged[int(row["id"])] = reason
            outcome.paused += paused
            outcome.alerts.append(f"connection {row['id']} flagged: {detail}")
            logger.warning("connection %s flagged by Meta: %s (campaigns paused: %s)", row["id"], reason, paused)
    return outcome


def report(alerts: Iterable[str]) -> None:
    """One Sentry event per flagged number (after the commit that paused its campaigns)."""
    for alert in alerts:
        sentry_sdk.capture_message(alert, level="warning")
