"""All SQL of contacts, psycopg ``%(name)s`` parameters: async for the API, sync for the ingest worker (and the
fragment that upserts them inside the ingest worker's message statement)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


def upsert_rows(rows: str) -> str:
    """SQL (the body of a data-modifying CTE): create or refresh every contact of ``rows`` (a CTE with
    ``company_id``, ``wa_id``, ``name``, ``ord``), one row per contact: the latest non-empty name wins, as one
    upsert per row in ``ord`` order would leave it, and ``updated_at`` moves only when the name changes.
    Contacts are written in (company, wa_id) order, so concurrent transactions lock them in one order.
    ``RETURNING id, company_id, wa_id``."""
    return f"""INSERT INTO contacts (company_id, wa_id, name)
SELECT DISTINCT ON (r.company_id, r.wa_id) r.company_id, r.wa_id, r.name FROM {rows} r
ORDER BY r.company_id, r.wa_id, r.name IS NULL, r.ord DESC
ON CONFLICT ON CONSTRAINT uq_contacts_company_wa_id DO UPDATE
SET name = COALESCE(EXCLUDED.name, contacts.name),
    updated_at = CASE WHEN EXCLUDED.name IS DISTINCT FROM contacts.name AND EXCLUDED.name IS NOT NULL
                      THEN now() ELSE contacts.updated_at END
RETURNING id, company_id, wa_id"""


#: Each contact with the last message of its conversation (either direction).
WITH_LAST_MESSAGE = """
SELECT c.id, c.company_id, c.wa_id, c.name, c.created_at, c.updated_at,
       m.id AS last_message_id, m.direction AS last_direction, m.type AS last_type, m.body AS last_text,
       m.status AS last_status, m.created_at AS last_message_at
FROM contacts c
LEFT JOIN LATERAL (
  SELECT id, direction, type, body, status, created_at FROM messages
  WHERE company_id = c.company_id AND recipient = c.wa_id ORDER BY id DESC LIMIT 1
) m ON true
WHERE c.company_id = %(company)s AND c.id > %(after)s
ORDER BY c.id LIMIT %(limit)s
"""

GET = "SELECT company_id, wa_id FROM contacts WHERE id = %(id)s"


async def page(conn: AsyncConnection[Any], company_id: int, *, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` contacts of the company after id ``after``, each with its conversation's last message."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(WITH_LAST_MESSAGE, {"company": company_id, "after": after, "limit": limit})
    return await cursor.fetchall()


async def get(conn: AsyncConnection[Any], contact_id: int) -> dict[str, Any] | None:
    """The contact's company and WhatsApp id, or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(GET, {"id": contact_id})
    return await cursor.fetchone()
