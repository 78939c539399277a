"""Parse the account-level changes of a Meta webhook: ``phone_number_quality_update`` and
``business_capability_update`` (pure, no I/O).

They arrive in the same envelope as messages (``entry[].changes[]`` with another ``field``), which
:func:`libs.whatsapp.meta.parse_meta_webhook` skips; this reads only them. Meta's shapes (whatsapp-more.md §5)::

    phone_number_quality_update  {"display_phone_number": "15550783881", "event": "FLAGGED",
                                  "current_limit": "TIER_10K", "old_limit": "TIER_100K",
                                  "max_daily_conversations_per_business": "TIER_2K"}
    business_capability_update   {"max_daily_conversation_per_phone": 1000, "max_phone_numbers_per_business": 2,
                                  "max_daily_conversations_per_business": 2000}

The event names differ between Meta's documents and time (ONBOARDING, THROUGHPUT_UPGRADE, UPGRADE, DOWNGRADE,
FLAGGED, UNFLAGGED…) and ``current_limit``/``old_limit`` were removed in February 2026, so every field is
optional and any event is accepted; a quality rating (``quality_rating`` / ``new_quality_score``) and a
throughput level are read when present. The envelope is checked by ``parse_meta_webhook`` (which runs first);
here a change that is not an object is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.whatsapp._json import load_object

QUALITY_FIELD = "phone_number_quality_update"
CAPABILITY_FIELD = "business_capability_update"
#: Events that flag a number (its campaigns are paused): Meta's documents name these, older or newer.
FLAGGING_EVENTS = frozenset({"FLAGGED", "DOWNGRADE", "THROUGHPUT_DOWNGRADE", "LIMIT_DOWNGRADE"})


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """One quality or capability change of a number (``display_phone_number``) or of a whole WABA."""

    field: str
    waba_id: str
    display_phone_number: str | None = None
    event: str | None = None
    #: The limit tier now and before (``TIER_2K``, or a number from ``business_capability_update``).
    current_limit: str | None = None
    old_limit: str | None = None
    quality_rating: str | None = None
    throughput_level: str | None = None
    #: The number's id, when the update is about one known by it (the Graph API's fields, not a webhook).
    phone_number_id: str | None = None


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()[:64]
    return None


def _throughput(value: Any) -> str | None:
    if isinstance(value, dict):
        return _text(value.get("level"))
    return _text(value)


def parse_account_updates(payload: bytes | dict[str, Any]) -> list[AccountUpdate]:
    """Every ``phone_number_quality_update`` and ``business_capability_update`` change of a Meta webhook."""
    data = load_object(payload)
    updates: list[AccountUpdate] = []
    entries = data.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            continue
        waba_id = _text(entry.get("id")) or ""
        for change in entry["changes"]:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                continue
            value: dict[str, Any] = change["value"]
            if change.get("field") == QUALITY_FIELD:
                updates.append(
                    AccountUpdate(
                        QUALITY_FIELD,
                        waba_id,
                        display_phone_number=_text(value.get("display_phone_number")),
                        event=(_text(value.get("event")) or "").upper() or None,
                        current_limit=_text(value.get("current_limit")),
                        old_limit=_text(value.get("old_limit")),
                        quality_rating=(
                            _text(value.get("quality_rating")) or _text(value.get("new_quality_score")) or ""
                        ).upper()
                        or None,
                        throughput_level=_throughput(value.get("throughput")),
                    )
                )
            elif change.get("field") == CAPABILITY_FIELD:
                limit = value.get("max_daily_conversations_per_business", value.get("max_daily_conversation_per_phone"))
                updates.append(AccountUpdate(CAPABILITY_FIELD, waba_id, current_limit=_text(limit)))
    return updates
