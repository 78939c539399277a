"""What an operator, the scheduler and the ingest worker do with template catalogues — one function each.

**Sync** (:func:`sync_connection`; :func:`sync_due` for the scheduler, every connection whose catalogue is older
than ``ZAPQ_TEMPLATE_SYNC_SECONDS``): read every page of the WABA's templates from the Graph API
(:mod:`libs.templates.graph`), then in one transaction replace the connection's templates with them and mark
its catalogue synced; from then on its template sends are checked (:mod:`libs.templates.catalogue`). A failed
sync changes nothing but the catalogue's ``last_error`` (an earlier catalogue stays in force) and is refused
as :class:`~libs.refusals.ProviderCallError`. Running campaigns whose template the sync finds PAUSED or
DISABLED are paused, as a status webhook would have done (a webhook may have been missed).

**Status webhook** (:func:`apply_status_update`, in the ingest worker's transaction): the template's new status
on every Meta connection of the WABA; PAUSED or DISABLED pauses the running campaigns using it, with the
reason (:func:`libs.campaigns.actions.pause_by_rule`, which writes their ``campaign.status`` event).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from libs.campaigns.actions import pause_by_rule
from libs.db.engine import Database
from libs.errors import ProviderError
from libs.refusals import InvalidError, NotFoundError, ProviderCallError
from libs.secrets import Secrets
from libs.templates import store
from libs.templates.catalogue import STOPPING, stop_reason
from libs.templates.graph import Graph, fetch_templates
from libs.whatsapp import TemplateStatusUpdate

logger = logging.getLogger(__name__)

#: Webhook events that are not the template's status, → the status they mean (``None``: leave it as it is, the
#: next sync tells; Meta does not say which status an unarchived template returns to).
EVENT_STATUS: dict[str, str | None] = {"REINSTATED": "APPROVED", "UNARCHIVED": None}
#: Connections synced per scheduler run at most (the rest wait for the next run).
DUE_PER_RUN = 50


def sync_connection(
    db: Database, http: httpx.Client, graph: Graph, secrets: Secrets, connection_id: int
) -> dict[str, Any]:
    """Sync one connection's catalogue; its ``connection_id``, ``templates`` (count), ``removed``,
    ``synced_at`` and ``paused_campaigns``. Refused: :class:`NotFoundError` (no such connection),
    :class:`InvalidError` (not a Meta connection, no ``waba_id`` or no access token),
    :class:`ProviderCallError` (Meta refused or failed the call: the text says how)."""
    with db.session() as session:
        row = store.for_sync(session, connection_id)
    if row is None:
        raise NotFoundError(f"no connection {connection_id}")
    if row["provider"] != "meta":
        raise InvalidError(f"connection {connection_id} is a {row['provider']} connection: only Meta has templates")
    if not row["waba_id"]:
        raise InvalidError(
            f"connection {connection_id} has no waba_id: set it (PATCH /api/connections/{connection_id} "
            '{"waba_id": "…"}, or zapq connection patch) to sync its templates'
        )
    token = secrets.decrypt_optional(row["access_token"])
    if not token:
        raise InvalidError(f"connection {connection_id} has no access token")
    try:
        templates = fetch_templates(http, graph, waba_id=row["waba_id"], access_token=token)
    except ProviderError as exc:
        with db.session() as session:
            store.failed(session, connection_id, str(exc))
        logger.warning("connection %s: template sync failed: %s", connection_id, exc)
        raise ProviderCallError(f"connection {connection_id}: Meta refused the template list: {exc}") from None
    with db.session() as session:
        result = store.replace(session, connection_id, _unique(templates))
        paused: list[int] = []
        for stopped in store.running_stopped(session, connection_id, sorted(STOPPING)):
            why = stop_reason(stopped["name"], stopped["language"], stopped["status"], stopped["reason"])
            paused += pause_by_rule(session, [stopped["id"]], why)
    logger.info("connection %s: %s templates synced", connection_id, result["template_count"])
    return {
        "connection_id": connection_id,
        "templates": int(result["template_count"]),
        "removed": int(result["removed"]),
        "synced_at": result["synced_at"],
        "paused_campaigns": paused,
    }


def _unique(templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (name, language): the last Meta listed (an upsert cannot take a key twice)."""
    return list({(t["name"], t["language"]): t for t in templates}.values())


def sync_due(
    db: Database,
    http: httpx.Client,
    graph: Graph,
    secrets: Secrets,
    *,
    max_age_s: int,
) -> dict[int, str | None]:
    """Sync every active Meta connection (with a WABA id) not tried for ``max_age_s`` seconds, up to
    :data:`DUE_PER_RUN`; connection id → ``None`` (synced) or why it failed. One failure does not stop the rest."""
    with db.session() as session:
        due = store.due(session, max_age_s, DUE_PER_RUN)
    results: dict[int, str | None] = {}
    for connection_id in due:
        try:
            sync_connection(db, http, graph, secrets, connection_id)
        except (ProviderCallError, InvalidError, NotFoundError) as exc:
            results[connection_id] = str(exc)
            continue
        results[connection_id] = None
    return results


async def sync_targets(pool: AsyncConnectionPool[Any], company_id: int | None) -> list[int]:
    """The connections a sync of a whole company (or of all, ``None``) covers: its Meta ones with a WABA id."""
    async with pool.connection() as conn:
        return await store.meta_of_company(conn, company_id)


async def list_templates(
    pool: AsyncConnectionPool[Any],
    *,
    company_id: int | None,
    connection_id: int | None,
    status: str | None,
    after: tuple[int, str, str],
    limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of templates (by connection, name, language) and whether more follow."""
    async with pool.connection() as conn:
        rows = await store.page(
            conn, company_id=company_id, connection_id=connection_id, status=status, after=after, limit=limit + 1
        )
    return rows[:limit], len(rows) > limit


async def catalogue_state(pool: AsyncConnectionPool[Any], connection_id: int) -> dict[str, Any] | None:
    """Whether a connection's template sends are checked (``checked``: its catalogue synced once), when it last
    synced and was tried, how many templates it has, the last error; ``None`` for an unknown connection."""
    async with pool.connection() as conn:
        row = await store.state(conn, connection_id)
    return None if row is None else {**row, "checked": row["synced_at"] is not None}


def apply_status_update(session: Session, update: TemplateStatusUpdate) -> list[int]:
    """Apply a ``message_template_status_update`` webhook (see the module docstring); the campaigns it paused."""
    status = EVENT_STATUS.get(update.event, update.event)
    if status is None:
        logger.info("template %s (%s) of WABA %s: %s, status left to the next sync", update.name,
                    update.language, update.waba_id, update.event)  # fmt: skip
        return []
    values = {
        "name": update.name[:512],
        "language": update.language[:16],
        "template_id": update.template_id,
        "status": status[:32],
        "category": update.category[:32] if update.category else None,
        "reason": update.reason,
    }
    connections = store.set_status(session, update.waba_id, values)
    if not connections:
        logger.info("template status for WABA %s: no Meta connection has it", update.waba_id)
        return []
    if status not in STOPPING:
        return []
    campaigns = store.running_using(session, update.waba_id, update.name, update.language)
    return pause_by_rule(session, campaigns, stop_reason(update.name, update.language, status, update.reason))
