"""Before a dead letter is replayed, the row its job works on is made workable again.

Some actors leave their row in a terminal state when they give up, and skip rows in that state when they run
(so a redelivered job never repeats its effect): the sender marks a message ``failed``, the ingest worker a
webhook ``failed``. Replaying such a job alone would run it and change nothing. So the replay first reopens
the row, in its own transaction, by the job's actor:

    actor                                   row                 reopened as
    send_message[_urgent|_low]              messages.id         queued, fresh attempts, failure in history
    process_webhook / process_webhooks      webhooks.id         enqueued (the outbox sweep covers a lost job)

Other actors' rows are never terminal on failure (a campaign slice, the recorder): their jobs just run again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from libs import contracts
from libs.ingest import store as webhooks
from libs.messages.actions import reopen_for_replay


def _message(session: Session, kwargs: dict[str, Any]) -> str | None:
    return reopen_for_replay(session, int(kwargs["message_id"]))


def _webhook(session: Session, kwargs: dict[str, Any]) -> str | None:
    webhooks.reopen_failed(session, [int(kwargs["webhook_id"])])
    return None


def _webhooks(session: Session, kwargs: dict[str, Any]) -> str | None:
    webhooks.reopen_failed(session, [int(i) for i in kwargs["webhook_ids"]])
    return None


#: Actor name → reopen the job's row in the replay's transaction; returns why the replay must not run, or None.
REOPENERS: dict[str, Callable[[Session, dict[str, Any]], str | None]] = {
    **{contract.actor_name: _message for contract in contracts.SEND_BY_TIER.values()},
    contracts.PROCESS_WEBHOOK.actor_name: _webhook,
    contracts.PROCESS_WEBHOOKS.actor_name: _webhooks,
}


def reopen(session: Session, actor_name: str, kwargs: dict[str, Any]) -> str | None:
    """Reopen the row of a job of ``actor_name`` with ``kwargs``; the reason when it must not be replayed."""
    reopener = REOPENERS.get(actor_name)
    return reopener(session, kwargs) if reopener is not None else None
