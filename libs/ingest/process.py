"""Worker side of ingestion: parse one stored webhook, apply it, mark its row — all in one transaction.

A row whose messages for some numbers had no connection is marked ``unmatched`` with those numbers; applied
again (once a connection exists) it applies only them (:mod:`libs.ingest.unmatched`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from libs.db.engine import Database
from libs.db.models import WebhookSource, WebhookStatus
from libs.errors import DependencyUnavailableError, RecordNotFoundError
from libs.ingest import store
from libs.ingest.apply import ConnectionCache, Outcome, apply_baileys, apply_meta, write_pending
from libs.ingest.unmatched import merge_notes
from libs.jsontext import NotJsonError, loads_keeping_surrogates, map_strings, replace_surrogates
from libs.rules import quality
from libs.rules.quality import apply_account_updates
from libs.tracing import span
from libs.whatsapp import parse_baileys_events, parse_meta_webhook
from libs.whatsapp.meta_account import parse_account_updates

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one row did, and what to write on it."""

    outcome: Outcome
    items: int
    error: str | None
    #: Numbers whose messages are still kept (``None``: the row is processed).
    unmatched: list[str] | None


def _apply(
    session: Any,
    source: str,
    body: bytes,
    connections: ConnectionCache | None = None,
    only: frozenset[str] | None = None,
) -> Outcome:
    """Apply one webhook body (``only``: just the kept messages of those numbers)."""
    payload = without_nul(bytes(body))
    if source == WebhookSource.META:
        batch = parse_meta_webhook(payload)
        outcome = apply_meta(session, batch, connections, only=only)
        if batch.skipped_changes and only is None:  # account changes (quality, capability) ride in the same body
            quality = apply_account_updates(session, parse_account_updates(payload))
            outcome.connection_changes += quality.updated
            outcome.alerts += quality.alerts
        return outcome
    return apply_baileys(session, parse_baileys_events(payload), only=only)


def _apply_row(session: Any, row: Sequence[Any], connections: ConnectionCache | None = None) -> Applied | None:
    """Apply a locked row (source, status, body, unmatched, item_count, error, traceparent) in a ``webhook.apply``
    span of the trace of the request that stored it (none if that was not traced: the row names its trace, so the
    span needs no id of its own); ``None`` when there is nothing left to apply. A row with kept numbers applies
    only their messages, never again the rest."""
    source, status, body, kept, item_count, error, traceparent = row
    with span("webhook.apply", parent=traceparent, root=False):
        if kept is not None:
            outcome = _apply(session, source, body, connections, only=frozenset(kept))
            still = sorted(outcome.unmatched) or None
            items = item_count if item_count is not None else outcome.items
            return Applied(outcome, items, merge_notes(error, outcome.notes), still)
        if status == WebhookStatus.PROCESSED:
            return None
        outcome = _apply(session, source, body, connections)
        note = "; ".join(dict.fromkeys(outcome.notes))[:4000] or None
        return Applied(outcome, outcome.items, note, sorted(outcome.unmatched) or None)


def _mark(session: Any, rows: list[tuple[int, Applied]]) -> None:
    write_pending(session)  # the messages, contacts and service windows of the applied webhooks
    store.mark_processed(
        session,
        [webhook_id for webhook_id, _ in rows],
        [applied.items for _, applied in rows],
        [applied.error for _, applied in rows],
        [Jsonb(applied.unmatched) if applied.unmatched else None for _, applied in rows],
    )


def process_webhook(db: Database, webhook_id: int) -> Outcome | None:
    """Apply webhook ``webhook_id`` and mark it processed (or unmatched); ``None`` when nothing was left to apply.

    Runs under the row's lock, so two deliveries of the same job never apply it concurrently, and a
    processed row is left alone (safe to run twice). The events of what it applied are written in the same
    transaction (:mod:`libs.events.outbox_store`), so they exist exactly when the changes do.
    A ``ParseError`` propagates (it is permanent: the job is dead-lettered and the row marked failed).
    """
    with db.session() as session:
        row = store.lock_one(session, webhook_id)
        if row is None:
            raise RecordNotFoundError(f"webhook {webhook_id} does not exist")
        applied = _apply_row(session, row)
        if applied is None:
            return None
        _mark(session, [(webhook_id, applied)])
    quality.report(applied.outcome.alerts)
    return applied.outcome


def process_webhooks(db: Database, webhook_ids: list[int]) -> list[Outcome]:
    """Apply a group of webhooks in **one** transaction; returns the outcomes of those applied.

    The same guarantees as :func:`process_webhook` for each (row locks, processed rows left alone, events
    written with their changes), with one lock statement, one mark statement and one commit for the whole
    group. Any failure rolls the whole group back and propagates: the caller then
    hands each webhook to its own :func:`process_webhook` job, so one bad webhook fails alone.
    """
    with db.session() as session:
        rows = store.lock_many(session, webhook_ids)
        connections: ConnectionCache = {}
        done: list[tuple[int, Applied]] = []
        for webhook_id, *row in rows:
            applied = _apply_row(session, row, connections)
            if applied is not None:
                done.append((webhook_id, applied))
        if done:
            _mark(session, done)
    quality.report(alert for _, applied in done for alert in applied.outcome.alerts)
    return [applied.outcome for _, applied in done]


def process_group(
    db: Database,
    webhook_ids: list[int],
    process_each: Callable[[list[int]], None],
) -> list[Outcome]:
    """:func:`process_webhooks`, falling back to ``process_each`` (one job per webhook) when the group fails;
    the outcomes of the webhooks applied (none after a fallback).

    A Postgres outage propagates (the whole group is deferred and retried); any other failure — a webhook
    that cannot be parsed or applied — hands every webhook of the group on, so the bad one fails alone.
    Nothing of the group was applied then (one transaction).
    """
    try:
        return process_webhooks(db, webhook_ids)
    except DependencyUnavailableError:
        raise
    except Exception as exc:
        logger.info("group of %d webhooks failed (%s): processing them one by one", len(webhook_ids), exc)
        process_each(webhook_ids)
        return []


#: A ``\\u0000`` or a ``\\ud800``–``\\udfff`` escape (paired or not: telling them apart needs the parse).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _as_text(value: str) -> str:
    return replace_surrogates(value).replace("\x00", "")


def without_nul(body: bytes) -> bytes | dict[str, Any]:
    """``body`` for the parsers, as text Postgres can hold: U+0000 dropped from every string and key, and each
    lone UTF-16 surrogate (``"\\udaae"``) replaced by U+FFFD, when it has any.

    JSON allows ``\\u0000`` and unpaired ``\\ud800``–``\\udfff`` escapes, but no Postgres text or jsonb value
    (nor UTF-8 at all) can hold them: one such character anywhere in a batch (a message text, a profile name)
    would fail the whole webhook on every attempt. The edge stores the raw bytes; they are cleaned here.
    """
    if not _SUSPECT_ESCAPE.search(body):
        return body
    try:
        data = loads_keeping_surrogates(body)
    except NotJsonError:
        return body  # the parser reports it
    if not isinstance(data, dict):
        return body
    return dict(map_strings(data, _as_text))


def mark_failed(db: Database, webhook_id: int, error: str) -> None:
    """Record that a webhook will not be processed (its job is being dead-lettered)."""
    with db.session() as session:
        store.mark_failed(session, webhook_id, error)
