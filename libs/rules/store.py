"""All SQL of the WhatsApp rules (psycopg ``%(name)s`` parameters): customer-service windows and opt-outs.

A window row is written by the ingest worker (sync, in the webhook's transaction) and read by the API (async)
and the sender (its claim statement joins :data:`WINDOW_OPEN` in :mod:`libs.sending.store`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from sqlalchemy.orm import Session

from libs.events import outbox_store as events

#: How long a free-form message is allowed after the customer last wrote (Meta's customer-service window).
WINDOW_SECONDS = 86_400

#: The customers wrote at these times (``%(connections)s``, ``%(wa_ids)s``, ``%(ats)s``, one row per pair): each
#: window moves forward only (webhooks may arrive out of order). Pairs come sorted, so two ingest transactions
#: touching the same windows lock them in one order.
TOUCH_WINDOWS = """
INSERT INTO service_windows (connection_id, wa_id, last_inbound_at)
SELECT * FROM unnest(%(connections)b::bigint[], %(wa_ids)b::text[], %(ats)b::timestamptz[])
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


#: ``session.info`` key of the windows touched in the transaction and not yet written.
_TOUCHED = "zapq.windows"


def touch_window(session: Session, connection_id: int, wa_id: str, at: dt.datetime) -> None:
    """Record that ``wa_id`` wrote to the connection at ``at`` (in the ingest worker's transaction).

    Only noted here; :func:`write_windows` writes every window the transaction touched in one statement, so a
    group of inbound webhooks costs one round trip for its windows, not one per message.
    """
    touched: dict[tuple[int, str], dt.datetime] = session.info.setdefault(_TOUCHED, {})
    key = (connection_id, wa_id)
    if key not in touched or touched[key] < at:
        touched[key] = at


def write_windows(session: Session) -> None:
    """Write the windows noted by :func:`touch_window` (call before the transaction commits)."""
    touched: dict[tuple[int, str], dt.datetime] = session.info.pop(_TOUCHED, {})
    if not touched:
        return
    pairs = sorted(touched)
    params = {
        "connections": [c for c, _ in pairs],
        "wa_ids": [w for _, w in pairs],
        "ats": [touched[p] for p in pairs],
    }
    session.connection().exec_driver_sql(TOUCH_WINDOWS, params)


async def window(conn: AsyncConnection[Any], connection_id: int, wa_id: str) -> dict[str, Any] | None:
    """The connection's window rule and the contact's window (``provider``, ``service_window``, ``closes_at``,
    ``open``), or ``None`` for an unknown connection."""
    cursor = conn.cursor(row_factory=dict_row)
    params = {"connection_id": connection_id, "wa_id": wa_id, "window_s": WINDOW_SECONDS}
    await cursor.execute(WINDOW, params)
    return await cursor.fetchone()


# -- opt-outs (a company's suppression list) --------------------------------------------------------------

#: Add numbers to a company's list (already there: kept as they were); the numbers newly added.
OPT_OUT = f"""
WITH added AS (
  INSERT INTO opt_outs (company_id, phone, source)
  SELECT %(company_id)s, p, %(source)s FROM unnest(%(phones)b::text[]) AS p
  ON CONFLICT (company_id, phone) DO NOTHING
  RETURNING company_id, phone
), events_written AS (
{events.opt_out_change("added", opted_out=True, source="%(source)s::text")}
)
SELECT phone FROM added
"""
#: Remove a number from a company's list (with its ``contact.opted_in`` event); the number when it was there.
OPT_IN = f"""
WITH removed AS (
  DELETE FROM opt_outs WHERE company_id = %(company_id)s AND phone = %(phone)s RETURNING company_id, phone
), events_written AS (
{events.opt_out_change("removed", opted_out=False, source="%(source)s::text")}
)
SELECT phone FROM removed
"""
#: One page of a company's list, by number.
OPT_OUTS_PAGE = """
SELECT company_id, phone, source, created_at FROM opt_outs
WHERE company_id = %(company_id)s AND phone > %(after)s ORDER BY phone LIMIT %(limit)s
"""
IS_OPTED_OUT = "SELECT 1 FROM opt_outs WHERE company_id = %(company_id)s AND phone = %(phone)s"
#: A company's own keywords (``NULL``: the defaults).
KEYWORDS = "SELECT opt_out_keywords, opt_in_keywords FROM companies WHERE id = %(company_id)s"


async def opt_out(conn: AsyncConnection[Any], company_id: int, phones: list[str], source: str) -> list[str]:
    """Add ``phones`` to the company's list; the ones that were not on it."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(OPT_OUT, {"company_id": company_id, "phones": phones, "source": source})
    return [row[0] for row in await cursor.fetchall()]


async def opt_in(conn: AsyncConnection[Any], company_id: int, phone: str, source: str) -> bool:
    """Remove ``phone`` from the company's list; whether it was on it."""
    cursor = await conn.execute(OPT_IN, {"company_id": company_id, "phone": phone, "source": source})
    return await cursor.fetchone() is not None


async def opt_outs_page(conn: AsyncConnection[Any], company_id: int, *, after: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` numbers of the company's list after ``after`` (by number)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(OPT_OUTS_PAGE, {"company_id": company_id, "after": after, "limit": limit})
    return await cursor.fetchall()


async def is_opted_out(conn: AsyncConnection[Any], company_id: int, phone: str) -> bool:
    """Whether ``phone`` is on the company's list."""
    cursor = await conn.execute(IS_OPTED_OUT, {"company_id": company_id, "phone": phone})
    return await cursor.fetchone() is not None


def keywords(session: Session, company_id: int) -> tuple[list[str] | None, list[str] | None]:
    """The company's own opt-out and opt-in keywords (``None``: the defaults), in the ingest transaction.

    Read once per company and session: the ingest worker applies a group of webhooks in one session, so a
    burst of short texts to one company costs one lookup, not one per message.
    """
    seen: dict[int, tuple[list[str] | None, list[str] | None]] = session.info.setdefault("zapq.keywords", {})
    if company_id not in seen:
        row = session.connection().exec_driver_sql(KEYWORDS, {"company_id": company_id}).first()
        seen[company_id] = (row[0], row[1]) if row is not None else (None, None)
    return seen[company_id]


def opt_out_sync(session: Session, company_id: int, phone: str, source: str) -> bool:
    """Add ``phone`` to the company's list in the ingest transaction; whether it was not on it."""
    params = {"company_id": company_id, "phones": [phone], "source": source}
    return session.connection().exec_driver_sql(OPT_OUT, params).first() is not None


def opt_in_sync(session: Session, company_id: int, phone: str) -> bool:
    """Remove ``phone`` from the company's list in the ingest transaction; whether it was on it."""
    params = {"company_id": company_id, "phone": phone, "source": "keyword"}
    return session.connection().exec_driver_sql(OPT_IN, params).first() is not None
