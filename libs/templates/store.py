"""All SQL of the template catalogue (psycopg ``%(name)s`` parameters): async reads for the API, sync writes
for the sync (scheduler, API thread) and the ingest worker (status webhooks).

A connection's templates are replaced as a whole by a sync (one transaction: upsert what Meta listed, delete
what it no longer lists, mark the catalogue synced); a status webhook changes one template on every Meta
connection of its WABA (and adds it where it is not known yet, without components until the next sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

#: Whether a connection exists, its provider, and when its catalogue last synced in full (``NULL``: never).
CATALOGUE = """
SELECT c.id, c.company_id, c.provider, k.synced_at
FROM connections c LEFT JOIN template_catalogues k ON k.connection_id = c.id
WHERE c.id = %(id)s
"""
#: A connection's catalogue state (``NULL`` columns: never tried).
STATE = """
SELECT c.id AS connection_id, c.company_id, k.synced_at, COALESCE(k.template_count, 0) AS template_count,
       k.attempted_at, k.last_error
FROM connections c LEFT JOIN template_catalogues k ON k.connection_id = c.id
WHERE c.id = %(id)s
"""
#: Every template of one connection (what a validation looks up).
TEMPLATES_OF = (
    "SELECT name, language, status, category, components FROM whatsapp_templates WHERE connection_id = %(id)s"
)

#: One page of templates (of a company, a connection, a status), by connection, name and language.
PAGE = """
SELECT t.connection_id, c.company_id, t.name, t.language, t.status, t.category, t.components, t.template_id,
       t.reason, t.synced_at, t.updated_at
FROM whatsapp_templates t JOIN connections c ON c.id = t.connection_id
WHERE (%(company_id)s::bigint IS NULL OR c.company_id = %(company_id)s)
  AND (%(connection_id)s::bigint IS NULL OR t.connection_id = %(connection_id)s)
  AND (%(status)s::text IS NULL OR t.status = %(status)s)
  AND (t.connection_id, t.name, t.language) > (%(after_connection)s, %(after_name)s, %(after_language)s)
ORDER BY t.connection_id, t.name, t.language
LIMIT %(limit)s
"""

#: What a sync of one connection needs (secrets still encrypted).
FOR_SYNC = """
SELECT id, company_id, provider, status, waba_id, access_token FROM connections WHERE id = %(id)s
"""
#: Meta connections whose catalogue is due: never tried, or last tried ``%(max_age_s)s`` seconds ago or more.
DUE = """
SELECT c.id FROM connections c LEFT JOIN template_catalogues k ON k.connection_id = c.id
WHERE c.provider = 'meta' AND c.status = 'active' AND c.waba_id IS NOT NULL AND c.waba_id <> ''
  AND c.access_token IS NOT NULL
  AND (k.connection_id IS NULL OR k.attempted_at <= now() - make_interval(secs => %(max_age_s)s))
ORDER BY k.attempted_at NULLS FIRST, c.id
LIMIT %(limit)s
"""
#: Every connection's ids of one company (or all) that a company-wide sync covers.
META_OF_COMPANY = """
SELECT id FROM connections
WHERE provider = 'meta' AND waba_id IS NOT NULL AND waba_id <> ''
  AND (%(company_id)s::bigint IS NULL OR company_id = %(company_id)s)
ORDER BY id LIMIT 1000
"""

#: Two syncs of one connection (the scheduler's, an operator's) replace its templates one after the other.
LOCK = (
    "INSERT INTO template_catalogues (connection_id) VALUES (%(connection_id)s) ON CONFLICT (connection_id) DO NOTHING",
    "SELECT 1 FROM template_catalogues WHERE connection_id = %(connection_id)s FOR UPDATE",
)
#: Replace one connection's templates with what Meta listed, and mark its catalogue synced.
REPLACE = """
WITH listed AS (
  SELECT * FROM unnest(%(names)b::text[], %(languages)b::text[], %(ids)b::text[], %(statuses)b::text[],
                       %(categories)b::text[], %(components)b::jsonb[], %(reasons)b::text[])
    AS l(name, language, template_id, status, category, components, reason)
), upserted AS (
  INSERT INTO whatsapp_templates
    (connection_id, name, language, template_id, status, category, components, reason, synced_at, updated_at)
  SELECT %(connection_id)s, name, language, template_id, status, category, components, reason, now(), now()
  FROM listed
  ON CONFLICT (connection_id, name, language) DO UPDATE
  SET template_id = EXCLUDED.template_id, status = EXCLUDED.status, category = EXCLUDED.category,
      components = EXCLUDED.components, reason = COALESCE(EXCLUDED.reason, whatsapp_templates.reason),
      synced_at = now(),
      updated_at = CASE WHEN whatsapp_templates.status IS DISTINCT FROM EXCLUDED.status
                         OR whatsapp_templates.components IS DISTINCT FROM EXCLUDED.components
                        THEN now() ELSE whatsapp_templates.updated_at END
  RETURNING 1
), removed AS (
  DELETE FROM whatsapp_templates t
  WHERE t.connection_id = %(connection_id)s
    AND NOT EXISTS (SELECT 1 FROM listed l WHERE l.name = t.name AND l.language = t.language)
  RETURNING 1
)
INSERT INTO template_catalogues (connection_id, synced_at, template_count, attempted_at, last_error)
VALUES (%(connection_id)s, now(), (SELECT count(*) FROM upserted), now(), NULL)
ON CONFLICT (connection_id) DO UPDATE
SET synced_at = EXCLUDED.synced_at, template_count = EXCLUDED.template_count, attempted_at = EXCLUDED.attempted_at,
    last_error = NULL
RETURNING synced_at, template_count, (SELECT count(*) FROM removed) AS removed
"""
#: A sync that failed: when, and why (an earlier success stays: its catalogue is still the one validated).
FAILED = """
INSERT INTO template_catalogues (connection_id, attempted_at, last_error)
VALUES (%(connection_id)s, now(), %(error)s)
ON CONFLICT (connection_id) DO UPDATE SET attempted_at = now(), last_error = EXCLUDED.last_error
"""

#: A status webhook: the template's new status on every Meta connection of the WABA (added where unknown).
SET_STATUS = """
INSERT INTO whatsapp_templates (connection_id, name, language, template_id, status, category, reason, updated_at)
SELECT c.id, %(name)s, %(language)s, %(template_id)s, %(status)s, %(category)s, %(reason)s, now()
FROM connections c WHERE c.provider = 'meta' AND c.waba_id = %(waba_id)s
ON CONFLICT (connection_id, name, language) DO UPDATE
SET status = EXCLUDED.status, reason = EXCLUDED.reason,
    template_id = COALESCE(EXCLUDED.template_id, whatsapp_templates.template_id),
    category = COALESCE(EXCLUDED.category, whatsapp_templates.category), updated_at = now()
RETURNING connection_id
"""

#: Running template campaigns of the WABA's connections sending the template ``%(name)s`` / ``%(language)s``.
RUNNING_USING = """
SELECT ca.id FROM campaigns ca JOIN connections c ON c.id = ca.connection_id
WHERE ca.status = 'running' AND ca.content_type = 'template' AND c.provider = 'meta' AND c.waba_id = %(waba_id)s
  AND ca.template ->> 'name' = %(name)s AND COALESCE(ca.template ->> 'language', 'en_US') = %(language)s
ORDER BY ca.id
"""
#: Running template campaigns of one connection whose template now has one of the ``%(statuses)s``.
RUNNING_STOPPED = """
SELECT ca.id, t.name, t.language, t.status, t.reason FROM campaigns ca
JOIN whatsapp_templates t ON t.connection_id = ca.connection_id AND t.name = ca.template ->> 'name'
  AND t.language = COALESCE(ca.template ->> 'language', 'en_US')
WHERE ca.connection_id = %(connection_id)s AND ca.status = 'running' AND ca.content_type = 'template'
  AND t.status = ANY(%(statuses)s)
ORDER BY ca.id
"""


#: Forget a connection's catalogue (its WABA changed): unchecked again until its next sync, due at once.
FORGET = """
WITH gone AS (DELETE FROM whatsapp_templates WHERE connection_id = %(id)s)
DELETE FROM template_catalogues WHERE connection_id = %(id)s
"""

# -- async (the API) ------------------------------------------------------------------------------------


async def catalogue(conn: AsyncConnection[Any], connection_id: int) -> dict[str, Any] | None:
    """The connection (``id``, ``company_id``, ``provider``) with its catalogue's ``synced_at``; ``None`` when
    there is no such connection."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(CATALOGUE, {"id": connection_id})
    return await cursor.fetchone()


async def state(conn: AsyncConnection[Any], connection_id: int) -> dict[str, Any] | None:
    """:data:`STATE`, or ``None`` for an unknown connection."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(STATE, {"id": connection_id})
    return await cursor.fetchone()


async def templates_of(conn: AsyncConnection[Any], connection_id: int) -> list[dict[str, Any]]:
    """Every template of one connection (name, language, status, category, components)."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(TEMPLATES_OF, {"id": connection_id})
    return await cursor.fetchall()


async def page(
    conn: AsyncConnection[Any],
    *,
    company_id: int | None,
    connection_id: int | None,
    status: str | None,
    after: tuple[int, str, str],
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` templates after ``after`` (connection id, name, language), filtered."""
    params = {
        "company_id": company_id,
        "connection_id": connection_id,
        "status": status,
        "after_connection": after[0],
        "after_name": after[1],
        "after_language": after[2],
        "limit": limit,
    }
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(PAGE, params)
    return await cursor.fetchall()


async def forget(conn: AsyncConnection[Any], connection_id: int) -> None:
    """:data:`FORGET` (in the caller's transaction)."""
    await conn.execute(FORGET, {"id": connection_id})


async def meta_of_company(conn: AsyncConnection[Any], company_id: int | None) -> list[int]:
    """The Meta connections with a WABA id of a company (or of all), up to 1,000."""
    cursor = await conn.execute(META_OF_COMPANY, {"company_id": company_id})
    return [int(row["id"] if isinstance(row, dict) else row[0]) for row in await cursor.fetchall()]


# -- sync (the sync, the ingest worker) -------------------------------------------------------------------


def for_sync(session: Session, connection_id: int) -> dict[str, Any] | None:
    """:data:`FOR_SYNC`, or ``None``."""
    row = session.connection().exec_driver_sql(FOR_SYNC, {"id": connection_id}).mappings().one_or_none()
    return None if row is None else dict(row)


def due(session: Session, max_age_s: int, limit: int) -> list[int]:
    """Ids of the Meta connections whose catalogue is due for a sync (:data:`DUE`)."""
    rows = session.connection().exec_driver_sql(DUE, {"max_age_s": max_age_s, "limit": limit})
    return [int(row[0]) for row in rows]


def replace(session: Session, connection_id: int, templates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Replace the connection's templates (each: name, language, template_id, status, category, components,
    reason) and mark its catalogue synced; ``synced_at``, ``template_count`` and ``removed``."""
    params = {
        "connection_id": connection_id,
        "names": [t["name"] for t in templates],
        "languages": [t["language"] for t in templates],
        "ids": [t["template_id"] for t in templates],
        "statuses": [t["status"] for t in templates],
        "categories": [t["category"] for t in templates],
        "components": [Jsonb(t["components"]) if t["components"] is not None else None for t in templates],
        "reasons": [t["reason"] for t in templates],
    }
    for statement in LOCK:
        session.connection().exec_driver_sql(statement, {"connection_id": connection_id})
    row = session.connection().exec_driver_sql(REPLACE, params).mappings().one()
    return dict(row)


def failed(session: Session, connection_id: int, error: str) -> None:
    """Note a failed sync of the connection's catalogue."""
    session.connection().exec_driver_sql(FAILED, {"connection_id": connection_id, "error": error[:2000]})


def set_status(session: Session, waba_id: str, values: dict[str, Any]) -> list[int]:
    """A status webhook's change (name, language, template_id, status, category, reason) on every Meta
    connection of ``waba_id``; their ids."""
    rows = session.connection().exec_driver_sql(SET_STATUS, {**values, "waba_id": waba_id})
    return [int(row[0]) for row in rows]


def running_using(session: Session, waba_id: str, name: str, language: str) -> list[int]:
    """Running template campaigns of the WABA's connections sending ``name`` in ``language``."""
    params = {"waba_id": waba_id, "name": name, "language": language}
    return [int(row[0]) for row in session.connection().exec_driver_sql(RUNNING_USING, params)]


def running_stopped(session: Session, connection_id: int, statuses: Sequence[str]) -> list[dict[str, Any]]:
    """Running template campaigns of the connection whose template has one of ``statuses`` (id, name,
    language, status, reason)."""
    params = {"connection_id": connection_id, "statuses": list(statuses)}
    return [dict(row) for row in session.connection().exec_driver_sql(RUNNING_STOPPED, params).mappings()]
