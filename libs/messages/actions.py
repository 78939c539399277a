"""What a producer or an operator does with messages — one function each: create one, retry a failed one; and
the reopening a dead-letter replay of a send does first.

**Create.** ``Idempotency-Key`` (unique per company) makes a create safe to retry: a repeat returns the stored
message and enqueues nothing. The row and its ``message.created`` event are written in one statement, and the
job is enqueued before that commits: if the enqueue fails, nothing was created
(:class:`~libs.refusals.QueueUnavailableError`). (Should the commit fail after the enqueue, the job finds no row
and ends as a dead letter naming the missing message.) WhatsApp's rules are applied first
(:class:`~libs.refusals.RuleViolationError`, 422 with the reason): a free-form message outside the contact's
customer-service window (:mod:`libs.rules.window`), a message to a number on the company's opt-out list unless
it is a transactional reply inside the window (:mod:`libs.rules.optouts`), a template the connection's
catalogue does not have approved, or with parameters that do not fit it (:mod:`libs.templates.catalogue`).

**Retry.** A message the sender failed for good is ``failed``, and the sender leaves ``failed`` rows alone (a
redelivered job must never send twice). Reopening it, under the row's lock, moves its failure (error, time,
attempts) to the end of its ``history`` and puts it back to ``queued`` with fresh attempts; its campaign's
``failed_count`` is given back (it is counted in ``sent_count`` once it is sent), so the counters stay exact.
Refused, with the reason (:func:`refusal`), when the message:

* is not ``failed`` (nothing to retry; a replay of a job whose row is not failed runs it as it is);
* was accepted by the provider and then reported failed by a status webhook (it has a provider id: a
  late status for that id would land on the new send — create a new message instead);
* belongs to a cancelled campaign, or its connection needs attention (fix the connection first: the send
  would only fail again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from dramatiq import Message
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.orm import Session

from libs import contracts
from libs.companies import store as companies
from libs.connections import store as connections
from libs.enqueue import enqueue_many_async
from libs.messages import kinds, store
from libs.refusals import ConflictError, InvalidError, NotFoundError, QueueUnavailableError, RuleViolationError
from libs.rules import limits, limits_store, window
from libs.rules import store as rules_store
from libs.rules.budget import Budget
from libs.rules.reasons import OPTED_OUT
from libs.sending.jobs import send_job, send_job_id
from libs.templates import catalogue
from libs.templates.catalogue import TemplateCache
from libs.tracing import span

logger = logging.getLogger(__name__)

#: How a retry was asked for (kept in the history entry).
VIA_API = "api"
VIA_REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """An outbound message a producer asks for: text, a template (``{"name", "language", "components"}``) or
    another kind's ``content`` (:mod:`libs.messages.kinds`, validated by the API), maybe a reply (``reply_to``)."""

    company_id: int
    to: str
    text: str | None = None
    template: dict[str, Any] | None = None
    #: ``text``, ``template`` or another kind of :data:`libs.messages.kinds.KINDS` (then with ``content``).
    kind: str = kinds.TEXT
    content: Any = None
    #: The provider id (wamid / key id) of the message this one quotes.
    reply_to: str | None = None
    priority: str = "normal"
    #: Default: the company's first active connection.
    connection_id: int | None = None
    idempotency_key: str | None = None
    #: A reply inside the customer-service window: allowed to a number on the suppression list.
    transactional: bool = False


def job_id(row: dict[str, Any]) -> str | None:
    """The Dramatiq message id of an API-created message's send job (``None`` for other messages)."""
    if row["direction"] != "out" or row["campaign_id"] is not None:
        return None
    return send_job_id(row["id"], row["created_at"])


def send_job_of(row: dict[str, Any]) -> Message[Any]:
    """The send job of a stored message, on its tier's queue (an API-created one under its derived job id)."""
    if job_id(row) is not None:
        return send_job(row["id"], row["priority"], row["created_at"])
    return contracts.SEND_BY_TIER[row["priority"]].message(contracts.SendMessage(row["id"]))


async def _connection_for(conn: Any, new: NewMessage) -> int:
    if not await companies.exists(conn, new.company_id):
        raise InvalidError(f"company {new.company_id} does not exist")
    if new.connection_id is not None:
        found = await connections.owner(conn, new.connection_id)
        if found is None or found["company_id"] != new.company_id:
            raise InvalidError(f"connection {new.connection_id} does not belong to company {new.company_id}")
        return new.connection_id
    connection_id = await connections.first_active(conn, new.company_id)
    if connection_id is None:
        raise InvalidError(f"company {new.company_id} has no active connection")
    return connection_id


async def _check_rules(conn: Any, new: NewMessage, connection_id: int) -> dict[str, Any] | None:
    """Refuse what a WhatsApp rule forbids now (:class:`~libs.refusals.RuleViolationError`): a free-form message
    outside the contact's customer-service window (:mod:`libs.rules.window`), a message to a number on the
    company's suppression list unless it is a transactional reply inside the window (:mod:`libs.rules.optouts`).
    A kind the connection's Baileys bridge cannot send is refused here too (:class:`~libs.refusals.InvalidError`,
    422), never failed later by the sender. Returns the contact's window state (with the connection's
    ``provider``), ``None`` for an unknown connection."""
    message_type = kind_of(new)
    state = await rules_store.window(conn, connection_id, new.to)
    if state is not None and state["provider"] != "meta":
        content = new.template if message_type == kinds.TEMPLATE else new.content
        if (why := kinds.bridge_refusal(message_type, content)) is not None:
            raise InvalidError(why)
    refused = window.refusal(state, message_type)
    if refused is not None:
        reason, closed_at = refused
        raise RuleViolationError(reason, window.describe(closed_at), window_closed_at=closed_at)
    if await rules_store.is_opted_out(conn, new.company_id, new.to):
        in_window = state is not None and bool(state["open"])
        if not (new.transactional and in_window):
            why = "a transactional reply" if new.transactional else "only a transactional reply (transactional: true)"
            text = (
                f"the number is on company {new.company_id}'s opt-out list; {why} inside the customer-service "
                "window may reach it"
            )
            raise RuleViolationError(OPTED_OUT, text, transactional=new.transactional, window_open=in_window)
    return state


async def _count_toward_budget(conn: Any, redis: aioredis.Redis, namespace: str, connection_id: int, to: str) -> None:
    """Count a business-initiated direct send (a template outside the window) in its portfolio's messaging-limit
    budget (:mod:`libs.rules.budget`): Meta counts it, so campaigns get that much less. Never refused or held; a
    Redis failure here loses one count, not the message."""
    try:
        portfolio = limits.resolve(await limits_store.portfolio_async(conn, connection_id))
        if portfolio is not None:
            await Budget(namespace).count_direct_async(redis, portfolio.key, to)
    except Exception:
        logger.warning(
            "a direct send to connection %s was not counted in its tier budget", connection_id, exc_info=True
        )


def kind_of(new: NewMessage) -> str:
    """The kind of ``new`` (a ``template`` given the old way counts as one)."""
    return kinds.TEMPLATE if new.template is not None else new.kind


def payload_of(new: NewMessage) -> dict[str, Any]:
    """The stored payload of ``new``: its kind's content under the kind's name, and ``reply_to``."""
    payload: dict[str, Any] = {}
    if new.template is not None:
        payload[kinds.TEMPLATE] = new.template
    elif new.kind != kinds.TEXT:
        payload[new.kind] = new.content
    if new.reply_to is not None:
        payload["reply_to"] = new.reply_to
    return payload


async def create_message(
    pool: AsyncConnectionPool[Any],
    redis: aioredis.Redis,
    namespace: str,
    new: NewMessage,
    *,
    templates: TemplateCache | None = None,
) -> tuple[dict[str, Any], bool]:
    """Store the message as ``queued`` and enqueue its send job; returns the row and whether it was created
    (``False``: its idempotency key was used before, and that message is returned). A template is checked
    against the connection's catalogue through ``templates`` (``None``: not checked)."""
    key = new.idempotency_key
    async with pool.connection() as conn:
        if key is not None and (row := await store.by_idempotency_key(conn, new.company_id, key)) is not None:
            return row, False
        connection_id = await _connection_for(conn, new)
        state = await _check_rules(conn, new, connection_id)
        if new.template is not None and templates is not None:
            await catalogue.check(templates, conn, connection_id, new.template, new.template.get("components") or [])
        provider = None if state is None else str(state["provider"])
        payload = payload_of(new)
        if new.kind == kinds.REACTION and provider is not None and provider != "meta":
            # A bridge names the reacted-to message by its whole key, whose fromMe zapq knows from its own rows.
            target = str(new.content["message_id"])
            payload["reaction_from_me"] = await store.direction_by_external_id(conn, connection_id, target) == "out"
        async with conn.transaction():
            row = await store.insert(
                conn,
                {
                    "company_id": new.company_id,
                    "connection_id": connection_id,
                    "priority": new.priority,
                    "recipient": new.to,
                    "type": kind_of(new),
                    "body": new.text if new.text is not None else kinds.summary(new.kind, new.content),
                    "payload": Jsonb(payload),
                    "key": key,
                },
            )
            if row is not None:
                try:
                    with span("message.enqueue", ids={"zapq.message": row["id"], "zapq.company": new.company_id}):
                        await enqueue_many_async(redis, namespace, [send_job_of(row)], lifecycle=True)
                except Exception:
                    logger.warning("message for company %s not enqueued; not created", new.company_id, exc_info=True)
                    raise QueueUnavailableError("the queue is unavailable; nothing was created, retry later") from None
        if row is None:  # a concurrent request with the same key won the insert
            assert key is not None
            existing = await store.by_idempotency_key(conn, new.company_id, key)
            assert existing is not None
            return existing, False
        if new.template is not None and not (state is not None and state["open"]):
            await _count_toward_budget(conn, redis, namespace, connection_id, new.to)
    return row, True


def refusal(state: dict[str, Any] | None, message_id: int) -> str | None:
    """Why the locked message ``state`` (a :data:`libs.messages.store.LOCK_FOR_RETRY` row) may not be reopened,
    or ``None``."""
    if state is None or state["direction"] != "out":
        return f"message {message_id} is not an outbound message"
    if state["status"] != "failed":
        return f"message {message_id} is {state['status']}; only a failed message can be retried"
    if state["external_id"] is not None:
        return (
            f"message {message_id} was accepted by the provider (as {state['external_id']}) and then reported "
            "failed; send a new message instead"
        )
    if state["campaign_status"] == "cancelled":
        return f"campaign {state['campaign_id']} of message {message_id} is cancelled"
    if state["connection_status"] == "needs_attention":
        reason = f" ({state['connection_reason']})" if state["connection_reason"] else ""
        return (
            f"connection {state['connection_id']} needs attention{reason}: fix its credentials first "
            f"(PATCH /api/connections/{state['connection_id']})"
        )
    return None


async def retry_message(
    pool: AsyncConnectionPool[Any], redis: aioredis.Redis, namespace: str, message_id: int
) -> tuple[dict[str, Any], Message[Any]]:
    """Send a failed message again: reopened (see the module docstring), then its send job enqueued; returns the
    row (queued) and the job. If the enqueue fails the message is failed again as it was
    (:class:`~libs.refusals.QueueUnavailableError`)."""
    async with pool.connection() as conn:
        async with conn.transaction():
            state = await store.lock_for_retry(conn, message_id)
            if state is None:
                raise NotFoundError(f"no message {message_id}")
            reason = refusal(state, message_id)
            if reason is not None:
                raise ConflictError(reason)
            await store.reopen(conn, message_id, VIA_API)
        row = await store.get(conn, message_id)
    assert row is not None
    job = send_job_of(row)
    try:
        await enqueue_many_async(redis, namespace, [job], lifecycle=True)
    except Exception:
        logger.warning("message %s reopened but not enqueued; failing it again", message_id, exc_info=True)
        async with pool.connection() as conn:
            await store.undo_reopen(conn, message_id)
        raise QueueUnavailableError("the queue is unavailable; the message is failed as before, retry later") from None
    return row, job


def reopen_for_replay(session: Session, message_id: int) -> str | None:
    """In a dead-letter replay's transaction: reopen the message if it is failed; the reason when it must not be
    replayed.

    A message that is not failed (queued, in flight, sent) is left as it is and its job may run again: the
    sender sends what is still to send, once. Only a failed message that cannot be reopened refuses the replay.
    """
    state = store.lock_for_retry_sync(session, message_id)
    if state is None or state["status"] != "failed":
        return None
    reason = refusal(state, message_id)
    if reason is not None:
        return reason
    store.reopen_sync(session, message_id, VIA_REPLAY)
    return None
