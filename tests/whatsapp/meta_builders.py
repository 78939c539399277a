"""Builders for Meta webhook payloads shared by the Meta parser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
WABA = "102290129340398"
NUMBER_ID = "106540352242922"
DISPLAY = "15550783881"


def fixture_bytes(name: str) -> bytes:
    """Return a fixture file's raw bytes."""
    return (FIXTURES / name).read_bytes()


def envelope(*entries: dict[str, Any]) -> dict[str, Any]:
    """Wrap entries in the webhook envelope."""
    return {"object": "whatsapp_business_account", "entry": list(entries)}


def entry(*changes: dict[str, Any], waba: str = WABA) -> dict[str, Any]:
    """Build one ``entry[]`` item."""
    return {"id": waba, "changes": list(changes)}


def change(number_id: str = NUMBER_ID, field: str = "messages", **value: Any) -> dict[str, Any]:
    """Build one ``changes[]`` item whose value carries ``value`` plus metadata."""
    body = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY, "phone_number_id": number_id},
        **value,
    }
    return {"field": field, "value": body}


def message(wamid: str, msg_type: str, body: Any = None, **extra: Any) -> dict[str, Any]:
    """Build one ``messages[]`` item of ``msg_type`` with its type object."""
    item: dict[str, Any] = {"from": "16505551234", "id": wamid, "timestamp": "1749416383", "type": msg_type}
    if body is not None:
        item[msg_type] = body
    item.update(extra)
    return item


def status(wamid: str, value: str = "sent", **extra: Any) -> dict[str, Any]:
    """Build one ``statuses[]`` item."""
    return {"id": wamid, "status": value, "timestamp": "1750030080", "recipient_id": "16505551234", **extra}
