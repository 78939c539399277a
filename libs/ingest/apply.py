"""Apply parsed webhooks to the database, idempotently, inside the webhook row's transaction.

* Inbound messages are stored once per connection (unique ``connection_id`` + ``external_id`` = wamid /
  Baileys ``key.id``: when one zapq company messages another, the receiver's copy shares the sender's id)
  with their contact upserted by wa_id; a newly stored one writes its ``message.received`` event in the same
  statement.
* Each inbound message from the customer opens (moves forward) the contact's 24 h customer-service window
  on that connection (:mod:`libs.rules.window`).
* An inbound text that is one of the company's opt-out / opt-in keywords adds / removes its sender to / from
  the suppression list (:mod:`libs.rules.optouts`).
* Statuses move outbound messages of the connection they arrived on forward only
  (:mod:`libs.messages.status_store`, which writes ``message.status``); early ones are kept. A status for a
  number with no connection is skipped.
* Template status changes (``message_template_status_update``) update the catalogue of every Meta connection
  of the WABA; a template PAUSED or DISABLED pauses the running campaigns using it
  (:func:`libs.templates.actions.apply_status_update`).
* Baileys ``connection.update``: ``close``/``refused`` deactivate the connection, ``open`` reactivates it
  (with a ``connection.status`` event).
* Inbound messages for a number (phone_number_id, bridge instance) without a connection are kept: the
  outcome lists the number in ``unmatched`` and the row waits for the connection (:mod:`libs.ingest.unmatched`);
  applied again with ``only``, a body applies just those numbers' messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy.orm import Session

from libs.connections import store as connections_store
from libs.db.models import ConnectionStatus, Direction, MessageStatus, WebhookSource
from libs.ingest import metrics, unmatched
from libs.media.limits import media_kind
from libs.messages import store as messages_store
from libs.messages.status_store import StatusChange, apply_status, apply_status_traced
from libs.rules import optouts
from libs.rules import store as rules_store
from libs.templates import actions as templates
from libs.tracing import enabled, end_late, hashed_key, late_span, recorded_traceparent
from libs.tracing import note as trace_note
from libs.whatsapp import (
    BaileysConnectionUpdate,
    BaileysMessageUpdate,
    BaileysMessageUpsert,
    InboundMessage,
    MetaBatch,
    StatusUpdate,
)

logger = logging.getLogger(__name__)

ConnectionKey = tuple[int, int]  # (company_id, connection_id)

#: Width of ``messages.type``: unknown provider types are kept as sent, so longer ones are clipped to fit
#: (the untouched item stays in ``payload.raw``) instead of failing the whole batch.
TYPE_LENGTH = 32
#: Inbound items that do not open the customer-service window (WhatsApp wrote them, not the customer).
NOT_FROM_CUSTOMER = frozenset({"system"})


@dataclass
class Outcome:
    """What applying one webhook did (counts for the row, notes for its error)."""

    stored: int = 0
    duplicates: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    connection_changes: int = 0
    template_changes: int = 0
    skipped: int = 0
    #: Inbound messages kept for numbers without a connection, and those numbers.
    kept: int = 0
    unmatched: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    #: Inbound media messages stored now: their files are fetched by ``media`` jobs once this commits.
    media: list[int] = field(default_factory=list)
    #: Sentry messages for after the commit (a number flagged by Meta: :mod:`libs.rules.quality`).
    alerts: list[str] = field(default_factory=list)
    #: Inbound messages stored, by company, connection and type (:mod:`libs.ingest.metrics`).
    received: Counter[str] = field(default_factory=Counter)

    @property
    def items(self) -> int:
        """Every item the webhook held."""
        return (
            self.stored
            + self.duplicates
            + sum(self.statuses.values())
            + self.connection_changes
            + self.template_changes
            + self.skipped
            + self.kept
        )

    def keep(self, kind: str, key: str) -> None:
        """One inbound message kept because no connection has ``key``."""
        self.kept += 1
        if key not in self.unmatched:
            self.unmatched.add(key)
            self.notes.append(unmatched.KEPT_NOTE.format(kind=kind, key=key))

    def count_status(self, result: str) -> None:
        """Tally one status application result."""
        self.statuses[result] = self.statuses.get(result, 0) + 1


def _at(timestamp: int | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else dt.datetime.now(dt.UTC)


#: phone_number_id → its connection (``None``: none), shared by the webhooks of one transaction.
ConnectionCache = dict[str, ConnectionKey | None]


def _meta_connections(
    session: Session, phone_number_ids: set[str], cache: ConnectionCache | None = None, *, fresh: bool = False
) -> dict[str, ConnectionKey]:
    """The connections of ``phone_number_ids``; ``fresh``: look again even for numbers cached as unknown."""
    cache = {} if cache is None else cache
    missing = sorted(pid for pid in phone_number_ids if pid and (pid not in cache or (fresh and cache[pid] is None)))
    if missing:
        rows = connections_store.meta_by_phone_number_ids(session, missing)
        found = {pid: (company, conn) for pid, company, conn in rows if pid}
        cache.update({pid: found.get(pid) for pid in missing})
    return {pid: key for pid in phone_number_ids if (key := cache.get(pid)) is not None}


def _meta_inbound_connections(
    session: Session, numbers: set[str], connections: dict[str, ConnectionKey], cache: ConnectionCache | None
) -> dict[str, ConnectionKey]:
    """``connections`` completed for the ``numbers`` of inbound messages found without one: under their shared
    lock, looked up again (a connection committed meanwhile is seen; one committed later finds this row)."""
    unknown = numbers - connections.keys()
    if not unknown:
        return connections
    unmatched.lock_shared(session, WebhookSource.META, unknown)
    return {**connections, **_meta_connections(session, unknown, cache, fresh=True)}


#: ``session.info`` key of the messages read in the transaction and not yet written, with their outcomes.
_PENDING = "zapq.received"


def _store_message(
    session: Session, outcome: Outcome, values: dict[str, Any], received: dict[str, Any] | None = None
) -> None:
    """Note one message row to store (once per external id), its contact to upsert with ``values["name"]``;
    ``received`` is the ``message.received`` data of an inbound one (all but ``message_id``), written as its
    event in the same statement. Counted as stored until :func:`write_pending` finds it was a duplicate.

    Rows are written together by :func:`write_pending` — before anything reads messages (a status) and before
    the transaction's webhooks are marked — so a group of webhooks costs one statement for its messages and
    contacts, not two per message.
    """
    values["type"] = values["type"][:TYPE_LENGTH]
    row = {
        **values,
        "direction": str(values["direction"]),
        "status": str(values["status"]),
        "payload": Jsonb(values["payload"]),
        "sent_at": values.get("sent_at"),
        "event": Jsonb(received) if received is not None else None,
        # the span applying its webhook: the message.received event's deliveries join that trace
        "traceparent": recorded_traceparent() if received is not None else None,
    }
    pending: list[tuple[Outcome, dict[str, Any]]] = session.info.setdefault(_PENDING, [])
    pending.append((outcome, row))
    outcome.stored += 1


def _noted_received(wamid: str, connection_id: int, kind: str) -> None:
    """A received message's hashed wamid, connection and type on the span applying its webhook — its attributes;
    a second message of the same webhook a ``message.received`` event (the row is written later, with the
    transaction's others: a span of its own would time nothing)."""
    if enabled():
        attributes = {"zapq.connection": hashed_key(connection_id), "zapq.type": kind}
        trace_note("message.received", ids={"zapq.wamid": wamid}, **attributes)


def write_pending(session: Session) -> None:
    """Write the messages noted by :func:`_store_message` (and their contacts and events) in one statement, and
    the service windows the transaction touched; the rows found already stored are counted as duplicates, the
    new inbound ones counted (``received``) and those with media noted (``media``) in their outcome."""
    pending: list[tuple[Outcome, dict[str, Any]]] = session.info.pop(_PENDING, [])
    if pending:
        stored = messages_store.insert_received_many(session, [row for _, row in pending])
        for position, (outcome, row) in enumerate(pending):
            message_id = stored.get(position)
            if message_id is None:
                outcome.stored -= 1
                outcome.duplicates += 1
            elif row["direction"] == Direction.INBOUND:
                outcome.received[metrics.field(row["company_id"], row["connection_id"], row["type"])] += 1
                if media_kind(row["type"]) is not None:
                    outcome.media.append(message_id)  # its file is fetched once the transaction commits
    rules_store.write_windows(session)


def received_data(
    values: dict[str, Any],
    *,
    contact_name: str | None,
    media: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    reply_id: str | None = None,
    reaction: dict[str, Any] | None = None,
    content: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``message.received`` data of the inbound message row ``values`` (``message_id`` is added by SQL)."""
    created: dt.datetime = values["created_at"]
    return {
        "company_id": values["company_id"],
        "connection_id": values["connection_id"],
        "external_id": values["external_id"],
        "contact": {"wa_id": values["recipient"], "name": contact_name},
        "type": values["type"][:TYPE_LENGTH],
        "text": values["body"],
        "media": media,
        "context": context,
        "reply_id": reply_id,
        "reaction": reaction,
        "content": content,
        "errors": errors,
        "timestamp": created.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }


def _inbound_payload(item: InboundMessage) -> dict[str, Any]:
    extras = {
        "media_id": item.media_id,
        "mime_type": item.mime_type,
        "reply_id": item.reply_id,
        "context_wamid": item.context_wamid,
        "reaction_to": item.reaction_to,
    }
    payload: dict[str, Any] = {k: v for k, v in extras.items() if v is not None}
    if item.type == "reaction":
        payload["reaction_removed"] = item.reaction_removed
    structured = {"content": item.content, "context": item.context, "errors": item.errors, "referral": item.referral}
    payload.update((k, v) for k, v in structured.items() if v is not None)
    payload["raw"] = item.raw
    return payload


def apply_meta(
    session: Session,
    batch: MetaBatch,
    connections_cache: ConnectionCache | None = None,
    *,
    only: frozenset[str] | None = None,
) -> Outcome:
    """Apply every contact, inbound message, status and system error of a Meta batch; inbound messages of
    numbers without a connection are kept (``outcome.unmatched``).

    ``connections_cache`` lets the webhooks of one transaction look each business number up once. ``only``
    (a kept webhook applied again) applies just the inbound messages of those phone_number_ids.
    """
    outcome = Outcome()
    inbound = [m for m in batch.inbound if only is None or m.phone_number_id in only]
    statuses = batch.statuses if only is None else ()
    connections = _meta_connections(
        session,
        {m.phone_number_id for m in inbound}
        | {s.phone_number_id for s in statuses}
        | {c.phone_number_id or "" for c in batch.contacts},
        connections_cache,
    )
    connections = _meta_inbound_connections(
        session, {m.phone_number_id for m in inbound}, connections, connections_cache
    )
    names = {(c.phone_number_id, c.wa_id): c.name for c in batch.contacts}
    for item in inbound:
        key = connections.get(item.phone_number_id)
        if key is None:
            outcome.keep("phone_number_id", item.phone_number_id)
            continue
        company_id, connection_id = key
        name = item.contact_name or names.get((item.phone_number_id, item.from_wa_id))
        received_at = _at(item.timestamp)
        values = {
            "company_id": company_id,
            "connection_id": connection_id,
            "name": name,
            "direction": Direction.INBOUND,
            "status": MessageStatus.RECEIVED,
            "recipient": item.from_wa_id,
            "type": item.type,
            "body": item.text,
            "payload": _inbound_payload(item),
            "external_id": item.wamid,
            "created_at": received_at,
        }
        _noted_received(item.wamid, connection_id, str(item.type))
        _store_message(session, outcome, values, _meta_received(values, item, name))
        if item.type not in NOT_FROM_CUSTOMER:
            rules_store.touch_window(session, connection_id, item.from_wa_id, received_at)
        if item.type == "text":
            apply_keywords(session, company_id, item.from_wa_id, item.text)
    if only is not None:
        return outcome
    if statuses:
        write_pending(session)  # a status may concern a message of this transaction
    for status in statuses:
        key = connections.get(status.phone_number_id)
        if key is None:  # no message of ours can have been sent from a number we do not know
            outcome.skipped += 1
            outcome.notes.append(f"no connection for phone_number_id {status.phone_number_id} (status)")
            continue
        outcome.count_status(_apply_status(session, _meta_status(status, key[1])))
    for update in batch.template_statuses:
        outcome.template_changes += 1
        templates.apply_status_update(session, update)
    for error in batch.system_errors:
        outcome.skipped += 1
        outcome.notes.append(f"system error {error.code}: {error.title}")
        logger.warning("Meta reported system error %s (%s) for WABA %s", error.code, error.title, error.waba_id)
    if batch.skipped_changes:
        outcome.notes.append(f"{batch.skipped_changes} change(s) of fields other than messages ignored")
    return outcome


def apply_keywords(session: Session, company_id: int, phone: str, text: str | None) -> None:
    """An inbound text that is one of the company's opt-out (opt-in) keywords adds (removes) its sender to
    (from) the suppression list (:mod:`libs.rules.optouts`); only short texts cost the keyword lookup."""
    if text is None or not optouts.candidate(text):
        return
    own_out, own_in = rules_store.keywords(session, company_id)
    opt_out = optouts.folded(own_out) if own_out is not None else optouts.DEFAULT_OPT_OUT
    opt_in = optouts.folded(own_in) if own_in is not None else optouts.DEFAULT_OPT_IN
    found = optouts.match(text, opt_out, opt_in)
    if found is None:
        return
    write_pending(session)  # the message's event comes before the opt-out's in its conversation
    if found == optouts.OPT_OUT and rules_store.opt_out_sync(session, company_id, phone, "keyword"):
        logger.info("company %s: a contact opted out by keyword", company_id)
    elif found == optouts.OPT_IN and rules_store.opt_in_sync(session, company_id, phone):
        logger.info("company %s: a contact opted back in by keyword", company_id)


def _meta_received(values: dict[str, Any], item: InboundMessage, name: str | None) -> dict[str, Any]:
    media = {"id": item.media_id, "mime_type": item.mime_type} if item.media_id else None
    context = item.context
    reaction = None
    if item.type == "reaction":
        reaction = {"message_id": item.reaction_to, "emoji": item.text, "removed": item.reaction_removed}
    return received_data(
        values,
        contact_name=name,
        media=media,
        context=context,
        reply_id=item.reply_id,
        reaction=reaction,
        content=item.content,
        errors=item.errors,
    )


def _apply_status(session: Session, change: StatusChange) -> str:
    """:func:`apply_status`, in a ``message.status`` span of its send's trace while tracing is on (the statement
    reads the send's context from the message row, and writes the span's into the status event)."""
    late = late_span(
        "message.status", ids={"zapq.wamid": change.external_id}, attributes={"zapq.status": change.status}
    )
    if late is None:
        return apply_status(session, change)
    change = dataclasses.replace(change, span_id=late.span_id, trace_id=late.trace_id)
    result, send_trace = apply_status_traced(session, change)
    end_late(late, send_trace)
    return result


def _meta_status(status: StatusUpdate, connection_id: int) -> StatusChange:
    raw = status.raw
    pricing, conversation = raw.get("pricing"), raw.get("conversation")
    return StatusChange(
        external_id=status.wamid,
        status=status.status,
        at=_at(status.timestamp),
        client_ref=status.biz_opaque_callback_data,
        code=status.error_code,
        title=status.error_title,
        pricing=pricing if isinstance(pricing, dict) else None,
        conversation=conversation if isinstance(conversation, dict) else None,
        connection_id=connection_id,
    )


def _bridge_connection(session: Session, instance: str) -> tuple[int, int, ConnectionStatus] | None:
    return connections_store.baileys_by_instance(session, instance)


#: Bridge statuses of our own messages that move them (others, e.g. ``pending``, are skipped).
BRIDGE_STATUSES = frozenset({"sent", "delivered", "read", "played", "failed"})


def apply_baileys(session: Session, events: list[Any], *, only: frozenset[str] | None = None) -> Outcome:
    """Apply Evolution API events: upserts, status updates, connection state changes; upserts for an instance
    without a connection are kept (``outcome.unmatched``). ``only`` (a kept webhook applied again) applies just
    the upserts of those instances."""
    outcome = Outcome()
    for event in events:
        instance = getattr(event, "instance", "")
        if only is not None and not (isinstance(event, BaileysMessageUpsert) and instance in only):
            continue
        if isinstance(event, BaileysMessageUpdate) and (event.status not in BRIDGE_STATUSES or not event.from_me):
            outcome.skipped += 1
            continue
        connection = _bridge_connection(session, instance)
        if connection is None and isinstance(event, BaileysMessageUpsert):
            unmatched.lock_shared(session, WebhookSource.BAILEYS, [instance])
            connection = _bridge_connection(session, instance)  # under the lock: see the module docstring
        if connection is None:
            if isinstance(event, BaileysMessageUpsert):
                outcome.keep("bridge instance", instance)
            else:  # a status or state change of an instance zapq does not know concerns nothing it holds
                outcome.skipped += 1
                outcome.notes.append(f"no connection for bridge instance {instance or '?'}")
            continue
        company_id, connection_id, connection_status = connection
        if isinstance(event, BaileysMessageUpdate):
            assert event.status is not None  # checked above
            write_pending(session)  # it may concern a message sent from the phone, stored by this transaction
            change = StatusChange(external_id=event.key_id, status=event.status, connection_id=connection_id)
            outcome.count_status(_apply_status(session, change))
        elif isinstance(event, BaileysMessageUpsert):
            _apply_upsert(session, outcome, event, company_id, connection_id)
        elif isinstance(event, BaileysConnectionUpdate):
            _apply_connection(session, outcome, event, connection_id, connection_status)
        else:
            outcome.skipped += 1
    return outcome


def _apply_upsert(
    session: Session, outcome: Outcome, event: BaileysMessageUpsert, company_id: int, connection_id: int
) -> None:
    if event.phone is None:  # groups and @lid chats are not conversations zapq models
        outcome.skipped += 1
        return
    name = None if event.from_me else event.push_name
    payload: dict[str, Any] = {"raw": event.raw}
    if event.quoted_id:
        payload["context_wamid"] = event.quoted_id
    if event.reaction_to:
        payload.update(reaction_to=event.reaction_to, reaction_removed=event.reaction_removed)
    if event.content is not None:
        payload["content"] = event.content
    if event.context is not None:
        payload["context"] = event.context
    values = {
        "company_id": company_id,
        "connection_id": connection_id,
        "name": name,
        "direction": Direction.OUTBOUND if event.from_me else Direction.INBOUND,
        "status": MessageStatus.SENT if event.from_me else MessageStatus.RECEIVED,
        "recipient": event.phone,
        "type": event.message_type,
        "body": event.text,
        "payload": payload,
        "external_id": event.key_id,
        "created_at": _at(event.timestamp),
        "sent_at": _at(event.timestamp) if event.from_me else None,  # a 'sent' row carries its sent_at
    }
    received = None
    if not event.from_me:  # a message sent from the linked phone is not something the customer wrote
        reaction = None
        if event.reaction_to:
            reaction = {"message_id": event.reaction_to, "emoji": event.text, "removed": event.reaction_removed}
        content = event.content
        reply_id = content.get("id") or content.get("payload") if content is not None else None
        received = received_data(
            values, contact_name=name, context=event.context, reaction=reaction, content=content, reply_id=reply_id
        )
        _noted_received(event.key_id, connection_id, str(event.message_type))
        _store_message(session, outcome, values, received)
    else:
        _store_message(session, outcome, values, received)
    if not event.from_me:  # the window is not enforced on Baileys; it says whether a reply is transactional
        rules_store.touch_window(session, connection_id, event.phone, _at(event.timestamp))
        if event.reaction_to is None:
            apply_keywords(session, company_id, event.phone, event.text)


def _apply_connection(
    session: Session, outcome: Outcome, event: BaileysConnectionUpdate, connection_id: int, current: ConnectionStatus
) -> None:
    outcome.connection_changes += 1
    if event.state == "open" and current == ConnectionStatus.INACTIVE:
        target, reason = ConnectionStatus.ACTIVE, None
    elif event.state in ("close", "refused") and current == ConnectionStatus.ACTIVE:
        target, reason = ConnectionStatus.INACTIVE, f"bridge reported {event.state} ({event.status_reason})"
    else:
        return
    connections_store.set_status_sync(session, connection_id, str(target), reason)
