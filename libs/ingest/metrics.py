"""Inbound messages per company, connection and type: counted where they are stored, exported by ``GET /metrics``.

Applying a webhook counts each inbound message it stored in its :class:`~libs.ingest.apply.Outcome`
(``received``, field ``<company>|<connection>|<type>``); after the group's transaction commits, the worker adds
the counts to one Redis hash in one round trip (:func:`record`) — a Redis error loses those counts, never the
messages. ``GET /metrics`` reads it (:func:`read`) as ``zapq_inbound_messages_total{company,connection,type}``.
Types outside :data:`TYPES` (WhatsApp adds some now and then) count as ``other``: the label set stays bounded.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from libs.keys import inbound_messages

#: Message types with their own label: Meta's ``messages[].type`` and the Baileys bridge's ``messageType``.
TYPES = frozenset(
    {
        # Meta Cloud API
        "text", "image", "audio", "video", "document", "sticker", "location", "contacts", "interactive",
        "button", "reaction", "order", "system", "unsupported", "request_welcome",
        # Baileys / Evolution
        "conversation", "extendedTextMessage", "imageMessage", "videoMessage", "audioMessage",
        "documentMessage", "stickerMessage", "locationMessage", "contactMessage", "reactionMessage",
        "buttonsResponseMessage", "listResponseMessage",
    }
)  # fmt: skip


def type_label(message_type: str) -> str:
    """The label of a message type (``other`` outside :data:`TYPES`)."""
    return message_type if message_type in TYPES else "other"


def field(company_id: int, connection_id: int, message_type: str) -> str:
    """The hash field (and :class:`Counter` key) of one company, connection and type."""
    return f"{company_id}|{connection_id}|{type_label(message_type)}"


def record(client: Any, namespace: str, counts: Iterable[Counter[str]]) -> None:
    """Add the counts of the applied webhooks to Redis in one round trip (nothing when there are none)."""
    total: Counter[str] = Counter()
    for one in counts:
        total.update(one)
    if not total:
        return
    with contextlib.suppress(Exception):  # metrics never fail the work they count (the rows are committed)
        pipe = client.pipeline(transaction=False)
        for name, count in total.items():
            pipe.hincrby(inbound_messages(namespace), name, count)
        pipe.execute()


async def read(client: Any, namespace: str) -> list[tuple[str, str, str, int]]:
    """Counts so far: ``(company, connection, type, count)``."""
    raw: dict[bytes, bytes] = await client.hgetall(inbound_messages(namespace))
    rows = []
    for name, value in raw.items():
        company, connection, message_type = name.decode().split("|", 2)
        rows.append((company, connection, message_type, int(value)))
    return sorted(rows)
