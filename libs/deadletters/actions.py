"""What the recorder, an operator and the retention job do with dead letters — one function each.

Recording is an upsert (the recorder is safe to run twice), and a replayed job that fails again turns its row
back into a dead letter with the new error instead of adding a second row. Replay is used by the API, the CLI
and the dashboard alike: :func:`replay` for many rows, :func:`replay_one` for one (with the reason when it is
not replayed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from dramatiq import Message

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import store
from libs.deadletters.reopen import reopen
from libs.deadletters.store import DeadLetterRow, Filter
from libs.errors import RecordNotFoundError
from libs.refusals import ConflictError, NotFoundError

#: What a replay hands its jobs to (``broker.enqueue``).
Enqueue = Callable[[Message[Any]], Any]


def _ts(value: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.UTC) if value is not None else None


def record(db: Database, entry: contracts.RecordDeadLetter) -> bool:
    """Write (or refresh) the ledger row of ``entry``; True when this is a new dead letter.

    "New" means the row did not exist, or it had been replayed and the job failed again; a redelivered
    recorder job for the same failure returns False (so it is reported to Sentry once).
    """
    message = entry.message
    values = {
        "message_id": message["message_id"],
        "queue_name": message["queue_name"],
        "actor_name": message["actor_name"],
        "args": list(message.get("args") or []),
        "kwargs": dict(message.get("kwargs") or {}),
        "message": message,
        "reason": entry.reason,
        "error_type": entry.error_type,
        "error_message": entry.error_message,
        "traceback": entry.traceback,
        "attempts": entry.attempts,
        "first_failed_at": _ts(entry.first_failed_at),
        "last_failed_at": _ts(entry.last_failed_at),
    }
    with db.session() as session:
        return store.record(session, values)


def list_rows(db: Database, flt: Filter, *, limit: int = 100) -> list[DeadLetterRow]:
    """Newest first."""
    with db.session() as session:
        return store.newest(session, flt, limit)


def get(db: Database, dead_letter_id: int) -> DeadLetterRow:
    """One row, or :class:`~libs.errors.RecordNotFoundError`."""
    with db.session() as session:
        row = store.get(session, dead_letter_id)
    if row is None:
        raise RecordNotFoundError(f"no dead letter with id {dead_letter_id}")
    return row


def matching_ids(db: Database, flt: Filter) -> list[int]:
    """Ids of the rows ``flt`` selects, oldest first."""
    with db.session() as session:
        return store.ids(session, flt)


def replayable_message(row: DeadLetterRow) -> Message[Any]:
    """The original job with fresh attempts (same message id, so the ledger row follows it)."""
    data = dict(row.message)
    return Message(
        queue_name=data["queue_name"],
        actor_name=data["actor_name"],
        args=tuple(data.get("args") or ()),
        kwargs=dict(data.get("kwargs") or {}),
        options=dict(data.get("options") or {}),
        message_id=data["message_id"],
        message_timestamp=data.get("message_timestamp") or 0,
    )


def replay(
    db: Database,
    enqueue: Enqueue,
    ids: list[int],
    *,
    dry_run: bool = False,
    refused: dict[int, str] | None = None,
) -> list[int]:
    """Re-enqueue the rows ``ids`` that are still dead; returns the ids actually replayed.

    In one transaction the ledger row is claimed (``replayed_at`` set, count incremented) and the row its job
    works on reopened (:mod:`libs.deadletters.reopen`: a failed message back to ``queued``, a failed webhook
    back to ``enqueued``); the job is enqueued once that is committed, so it finds its row reopened. Two
    concurrent replays of one row enqueue it once, and a row already replayed is not enqueued again. If the
    enqueue fails the ledger row is dead again (replay it later; the reopened message waits ``queued``).

    A row whose job must not run now (its message's connection needs attention, its campaign was cancelled)
    is not replayed: its id and the reason go to ``refused``.
    """
    replayed: list[int] = []
    for dead_letter_id in ids:
        with db.session() as session:
            row = store.claim_for_replay(session, dead_letter_id)
            if row is None:
                continue
            message = replayable_message(row)
            if dry_run:
                replayed.append(dead_letter_id)
                continue
            reason = reopen(session, message.actor_name, dict(message.kwargs))
            if reason is not None:
                if refused is not None:
                    refused[dead_letter_id] = reason
                continue  # nothing was written: the reopen only looked
            store.mark_replayed(session, dead_letter_id, message.message_id)
        try:
            enqueue(message)
        except BaseException:
            with db.session() as session:
                store.unmark_replayed(session, dead_letter_id)
            raise
        replayed.append(dead_letter_id)
    return replayed


def replay_one(db: Database, enqueue: Enqueue, dead_letter_id: int) -> DeadLetterRow:
    """Replay one dead letter (:func:`replay`); returns its row. Refused with the reason
    (:class:`~libs.refusals.ConflictError`) when it was replayed already, is being replayed, or its job must not
    run now; :class:`~libs.refusals.NotFoundError` when there is no such row."""
    with db.session() as session:
        row = store.get(session, dead_letter_id)
    if row is None:
        raise NotFoundError(f"no dead letter {dead_letter_id}")
    if row.replayed_at is not None:
        raise ConflictError(f"dead letter {dead_letter_id} was already replayed at {row.replayed_at.isoformat()}")
    refused: dict[int, str] = {}
    done = replay(db, enqueue, [dead_letter_id], refused=refused)
    if dead_letter_id in refused:
        raise ConflictError(f"dead letter {dead_letter_id} not replayed: {refused[dead_letter_id]}")
    if not done:
        raise ConflictError(f"dead letter {dead_letter_id} is being replayed by someone else")
    return row


def purge(db: Database, *, ids: list[int] | None = None, older_than: dt.datetime | None = None) -> int:
    """Delete rows by id or by age; returns how many were deleted."""
    if ids is None and older_than is None:
        raise ValueError("purge needs ids or an age")
    with db.session() as session:
        return store.delete(session, ids=ids, older_than=older_than)


def prune(db: Database, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """Delete rows older than the retention period (the periodic job)."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    return purge(db, older_than=cutoff)
