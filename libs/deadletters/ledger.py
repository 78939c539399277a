"""Dead-letter ledger operations on Postgres.

One row per failed job (keyed by its Dramatiq message id): recording is an upsert, so the recorder is
safe to run twice, and a replayed job that fails again turns its row back into a dead letter with the new
error instead of adding a second row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dramatiq import Message
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from libs import contracts
from libs.db.engine import Database
from libs.db.models import DeadLetter
from libs.deadletters.reopen import reopen
from libs.errors import RecordNotFoundError


def as_dict(row: DeadLetter, *, full: bool = False, max_error: int | None = None) -> dict[str, Any]:
    """A ledger row as the CLI and the API show it; ``full`` adds arguments, options and the traceback."""
    data: dict[str, Any] = {
        "id": row.id,
        "message_id": row.message_id,
        "queue": row.queue_name,
        "actor": row.actor_name,
        "reason": row.reason,
        "error_type": row.error_type,
        "error_message": row.error_message[:max_error] if max_error else row.error_message,
        "attempts": row.attempts,
        "first_failed_at": row.first_failed_at,
        "last_failed_at": row.last_failed_at,
        "created_at": row.created_at,
        "state": "replayed" if row.replayed_at else "dead",
        "replay_count": row.replay_count,
        "replayed_at": row.replayed_at,
    }
    if full:
        data.update(args=row.args, kwargs=row.kwargs, options=row.message.get("options"), traceback=row.traceback)
    return data


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
    base = insert(DeadLetter).values(**values)
    excluded = base.excluded
    stmt = base.on_conflict_do_update(
        index_elements=[DeadLetter.message_id],
        set_={
            "reason": excluded.reason,
            "error_type": excluded.error_type,
            "error_message": excluded.error_message,
            "traceback": excluded.traceback,
            "attempts": excluded.attempts,
            "last_failed_at": excluded.last_failed_at,
            "message": excluded.message,
            "replayed_at": None,
            "created_at": func.now(),
        },
        # Only a failure after a replay (or a later failure) refreshes the row.
        where=(DeadLetter.replayed_at.is_not(None)) | (DeadLetter.last_failed_at < excluded.last_failed_at),
    ).returning(DeadLetter.id)
    with db.session() as session:
        return session.execute(stmt).scalar_one_or_none() is not None


@dataclass(frozen=True, slots=True)
class Filter:
    """Which rows a list / replay / purge applies to."""

    queue: str | None = None
    since: dt.datetime | None = None
    older_than: dt.datetime | None = None
    only_dead: bool = False

    def where(self) -> list[Any]:
        """SQLAlchemy conditions for this filter."""
        conditions: list[Any] = []
        if self.queue:
            conditions.append(DeadLetter.queue_name == self.queue)
        if self.since:
            conditions.append(DeadLetter.created_at >= self.since)
        if self.older_than:
            conditions.append(DeadLetter.created_at < self.older_than)
        if self.only_dead:
            conditions.append(DeadLetter.replayed_at.is_(None))
        return conditions


def list_rows(db: Database, flt: Filter, *, limit: int = 100) -> list[DeadLetter]:
    """Newest first."""
    with db.session() as session:
        return list(
            session.execute(
                select(DeadLetter).where(*flt.where()).order_by(DeadLetter.id.desc()).limit(limit)
            ).scalars()
        )


def get(db: Database, dead_letter_id: int) -> DeadLetter:
    """One row, or :class:`RecordNotFoundError`."""
    with db.session() as session:
        row = session.get(DeadLetter, dead_letter_id)
    if row is None:
        raise RecordNotFoundError(f"no dead letter with id {dead_letter_id}")
    return row


def replayable_message(row: DeadLetter) -> Message[Any]:
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
    enqueue: Any,
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
            row = session.execute(
                select(DeadLetter)
                .where(DeadLetter.id == dead_letter_id, DeadLetter.replayed_at.is_(None))
                .with_for_update(skip_locked=True)
            ).scalar_one_or_none()
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
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.id == dead_letter_id)
                .values(
                    replayed_at=func.now(),
                    replay_count=DeadLetter.replay_count + 1,
                    replayed_message_id=message.message_id,
                )
            )
        try:
            enqueue(message)
        except BaseException:
            with db.session() as session:
                session.execute(
                    update(DeadLetter)
                    .where(DeadLetter.id == dead_letter_id, DeadLetter.replayed_at.is_not(None))
                    .values(replayed_at=None, replay_count=DeadLetter.replay_count - 1)
                )
            raise
        replayed.append(dead_letter_id)
    return replayed


def matching_ids(db: Database, flt: Filter) -> list[int]:
    """Ids of the rows ``flt`` selects, oldest first."""
    with db.session() as session:
        return list(session.execute(select(DeadLetter.id).where(*flt.where()).order_by(DeadLetter.id)).scalars())


def purge(db: Database, *, ids: list[int] | None = None, older_than: dt.datetime | None = None) -> int:
    """Delete rows by id or by age; returns how many were deleted."""
    if ids is None and older_than is None:
        raise ValueError("purge needs ids or an age")
    stmt = delete(DeadLetter)
    if ids is not None:
        stmt = stmt.where(DeadLetter.id.in_(ids))
    if older_than is not None:
        stmt = stmt.where(DeadLetter.created_at < older_than)
    with db.session() as session:
        return session.execute(stmt).rowcount or 0  # type: ignore[attr-defined]


def prune(db: Database, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """Delete rows older than the retention period (the periodic job)."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    return purge(db, older_than=cutoff)
