"""All SQL of the WhatsApp rules (psycopg ``%(name)s`` parameters): customer-service windows and opt-outs.

A window row is written by the ingest worker (sync, in the webhook's transaction) and read by the API (async)
and the sender (its claim statement joins :data:`WINDOW_OPEN` in :mod:`libs.sending.store`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

#: How long a free-form message is allowed after the customer last wrote (Meta's customer-service window).
WINDOW_SECONDS = 86_400

#: The customer wrote at ``%(at)s``: the window moves forward only (webhooks may arrive out of order).
TOUCH_WINDOW = """
INSERT INTO service_windows (connection_id, wa_id, last_inbound_at)
VALUES (%(connection_id)s, %(wa_id)s, %(at)s)
ON CONFLICT (connection_id, wa_id) DO UPDATE
SET last_inbound_at = GREATEST(service_windows.last_inbound_at, EXCLUDED.last_inbound_at)
WHERE service_windows.last_inbound_at < EXCLUDED.last_inbound_at
"""

#: Whether a free-form message from connection ``%(connection_id)s`` to ``%(wa_id)s`` may go now, and when the
#: window closes (closed: when it closed; ``NULL``: the customer never wrote).
WINDOW = """
SELECT c.provider, c.service_window, w.last_inbound_at + make_interval(secs => %(window_s)s) AS closes_at,
       COALESCE(w.last_inbound_at + make_interval(secs => %(window_s)s) > now(), false) AS open
FROM connections c
LEFT JOIN service_windows w ON w.connection_id = c.id AND w.wa_id = %(wa_id)s
WHERE c.id = %(connection_id)s
"""


def touch_window(session: Session, connection_id: int, wa_id: str, at: dt.datetime) -> None:
    """Record that ``wa_id`` wrote to the connection at ``at`` (sync, in the ingest worker's transaction)."""
    params = {"connection_id": connection_id, "wa_id": wa_id, "at": at}
    session.connection().exec_driver_sql(TOUCH_WINDOW, params)


async def window(conn: AsyncConnection[Any], connection_id: int, wa_id: str) -> dict[str, Any] | None:
    """The connection's window rule and the contact's window (``provider``, ``service_window``, ``closes_at``,
    ``open``), or ``None`` for an unknown connection."""
    cursor = conn.cursor(row_factory=dict_row)
    params = {"connection_id": connection_id, "wa_id": wa_id, "window_s": WINDOW_SECONDS}
    await cursor.execute(WINDOW, params)
    return await cursor.fetchone()
