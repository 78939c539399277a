"""SQL that writes events in the same statement (hence the same transaction) as their fact.

Each fact's statement is a data-modifying CTE that ``RETURNING``s the changed rows; the fragments here turn
those rows into ``events`` rows, so an event exists exactly when its fact does (the outbox). The ``data`` of
each type is built here once and matches :mod:`libs.events.types` (checked by the tests).

Fragments take the name of the CTE holding the fact's rows and the SQL expressions of the few values that are
not columns; parameters use psycopg's ``%(name)s`` style (run with ``exec_driver_sql`` from sync code).
Timestamps are rendered by ``zapq_iso()`` (migration 0002): UTC ISO 8601 whatever the session's time zone.
"""

from __future__ import annotations

from libs.events.types import (
    CAMPAIGN_STATUS,
    CONNECTION_STATUS,
    CONTACT_OPTED_IN,
    CONTACT_OPTED_OUT,
    MESSAGE_CREATED,
    MESSAGE_STATUS,
)

#: ``events`` columns every fragment fills (``id``, ``created_at`` and the publishing columns are defaulted).
INSERT_EVENTS = "INSERT INTO events (company_id, type, conversation, occurred_at, data)"
#: The same with the W3C context of the traced span that wrote the event (its deliveries join that trace).
INSERT_EVENTS_TRACED = "INSERT INTO events (company_id, type, conversation, occurred_at, data, traceparent)"


def conversation_of_contact(recipient: str) -> str:
    """SQL: the ordering key of a contact's conversation (``contact:<wa_id>``)."""
    return f"'contact:' || {recipient}"


def message_created(rows: str) -> str:
    """``message.created`` for each row of ``rows`` (new outbound ``messages`` rows, all columns)."""
    return f"""{INSERT_EVENTS}
SELECT r.company_id, '{MESSAGE_CREATED}', {conversation_of_contact("r.recipient")}, r.created_at,
       jsonb_build_object(
         'message_id', r.id, 'company_id', r.company_id, 'connection_id', r.connection_id,
         'campaign_id', r.campaign_id, 'contact', jsonb_build_object('wa_id', r.recipient), 'type', r.type,
         'text', r.body, 'template', r.payload -> 'template',
         'content', CASE WHEN r.type IN ('text', 'template') THEN NULL ELSE r.payload -> r.type END,
         'priority', r.priority, 'status', 'queued',
         'timestamp', zapq_iso(r.created_at))
FROM {rows} r ORDER BY r.id"""


def message_status(
    rows: str,
    *,
    status: str,
    at: str,
    error: str = "NULL",
    pricing: str = "NULL",
    conversation: str = "NULL",
    traceparent: str = "NULL",
) -> str:
    """``message.status`` for each row of ``rows`` (id, company_id, connection_id, campaign_id, external_id,
    recipient, old_status) moved to ``status`` at ``at``; ``error`` / ``pricing`` / ``conversation`` are jsonb
    SQL expressions (Meta's objects when it sent them), ``traceparent`` a text one (the span applying it)."""
    return f"""{INSERT_EVENTS_TRACED}
SELECT r.company_id, '{MESSAGE_STATUS}', {conversation_of_contact("r.recipient")}, {at},
       jsonb_build_object(
         'message_id', r.id, 'company_id', r.company_id, 'connection_id', r.connection_id,
         'campaign_id', r.campaign_id, 'external_id', r.external_id,
         'contact', jsonb_build_object('wa_id', r.recipient), 'status', {status}, 'previous_status', r.old_status,
         'error', {error}, 'pricing', {pricing}, 'conversation', {conversation}, 'timestamp', zapq_iso({at})),
       {traceparent}
FROM {rows} r ORDER BY r.id"""


#: The campaign columns :func:`campaign_status` reads.
CAMPAIGN_RETURNING = """id, company_id, connection_id, name, start_at, recipients_count, queued_count, sent_count,
delivered_count, read_count, failed_count, status_reason"""


def campaign_status(rows: str, transition: str) -> str:
    """``campaign.status`` with ``transition`` (started, paused, …) for each campaign of ``rows`` (``reason``: why a
    rule paused it, else ``null``)."""
    return f"""{INSERT_EVENTS}
SELECT c.company_id, '{CAMPAIGN_STATUS}', 'campaign:' || c.id, now(),
       jsonb_build_object(
         'campaign_id', c.id, 'company_id', c.company_id, 'connection_id', c.connection_id, 'name', c.name,
         'status', '{transition}', 'reason', c.status_reason, 'start_at', zapq_iso(c.start_at),
         'counters', jsonb_build_object(
           'recipients', c.recipients_count, 'queued', c.queued_count, 'sent', c.sent_count,
           'delivered', c.delivered_count, 'read', c.read_count, 'failed', c.failed_count),
         'timestamp', zapq_iso(now()))
FROM {rows} c ORDER BY c.id"""


def connection_status(rows: str) -> str:
    """``connection.status`` for each row of ``rows`` (id, company_id, provider, status, status_reason,
    old_status) whose status really changed."""
    return f"""{INSERT_EVENTS}
SELECT c.company_id, '{CONNECTION_STATUS}', 'connection:' || c.id, now(),
       jsonb_build_object(
         'connection_id', c.id, 'company_id', c.company_id, 'provider', c.provider, 'status', c.status,
         'previous_status', c.old_status, 'reason', c.status_reason, 'timestamp', zapq_iso(now()))
FROM {rows} c WHERE c.status IS DISTINCT FROM c.old_status ORDER BY c.id"""


def change_connection_status(*, where: str, status: str, reason: str) -> str:
    """One statement: move the connections matching ``where`` (SQL over ``connections``) to ``status`` with
    ``reason`` (SQL expressions), and write ``connection.status`` for each that changed. Returns the changed
    rows (id, status, previous status)."""
    return f"""
WITH old AS (
  SELECT id, status AS old_status FROM connections WHERE {where} FOR UPDATE
), changed AS (
  UPDATE connections c SET status = {status}, status_reason = {reason}, updated_at = now()
  FROM old o WHERE c.id = o.id AND c.status IS DISTINCT FROM {status}
  RETURNING c.id, c.company_id, c.provider, c.status, c.status_reason, o.old_status
), events_written AS (
{connection_status("changed")}
)
SELECT id, status, old_status FROM changed"""


#: Set one connection's status and reason (``%(id)s``, ``%(status)s``, ``%(reason)s``), with its event.
SET_CONNECTION_STATUS = change_connection_status(
    where="id = %(id)s", status="%(status)s::text", reason="%(reason)s::text"
)


def opt_out_change(rows: str, *, opted_out: bool, source: str) -> str:
    """``contact.opted_out`` (``contact.opted_in``) for each row of ``rows`` (company_id, phone) put on (taken
    off) a company's opt-out list; ``source`` is an SQL expression (``keyword``, ``api``, …)."""
    kind, status = (CONTACT_OPTED_OUT, "opted_out") if opted_out else (CONTACT_OPTED_IN, "opted_in")
    return f"""{INSERT_EVENTS}
SELECT o.company_id, '{kind}', {conversation_of_contact("o.phone")}, now(),
       jsonb_build_object(
         'company_id', o.company_id, 'contact', jsonb_build_object('wa_id', o.phone), 'status', '{status}',
         'source', {source}, 'timestamp', zapq_iso(now()))
FROM {rows} o ORDER BY o.phone"""
