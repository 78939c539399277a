"""``zapq dlq list|show|replay|purge``: the dead-letter ledger from the command line.

Reads and writes the ledger directly (:mod:`libs.deadletters.actions`, this session's Postgres), and replays
through the broker. Registered on the ``zapq`` parser by :func:`register`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from libs.cli.output import EXIT_FAILED, EXIT_OK, UsageError, key_values, print_result, table
from libs.settings import Settings
from libs.timeparse import parse_duration, parse_since


def _dead_letter_dict(row: Any, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = row.as_dict(full=full)
    return data


def _db(settings: Settings) -> Any:
    from libs.db.engine import Database

    return Database.from_settings(settings, pool_size=2)


def _audit(db: Any, action: str, ids: list[int], **details: Any) -> None:
    from libs.cli.keys import record

    with db.session() as session:
        record(session, action, ",".join(map(str, ids[:20])) or None, count=len(ids), **details)


def _filter(args: argparse.Namespace, **extra: Any) -> Any:
    from libs.deadletters.store import Filter

    return Filter(queue=args.queue, since=parse_since(args.since) if args.since else None, **extra)


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, newest first."""
    from libs.deadletters import actions

    rows = [_dead_letter_dict(r) for r in actions.list_rows(_db(settings), _filter(args), limit=args.limit)]
    print_result(
        rows,
        args.json,
        lambda rs: table(rs, ["id", "queue", "actor", "reason", "error_type", "attempts", "state", "last_failed_at"]),
    )
    return EXIT_OK


def cmd_dlq_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one dead letter in full."""
    from libs.deadletters import actions

    data = _dead_letter_dict(actions.get(_db(settings), args.id), full=True)
    print_result(data, args.json, key_values)
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Re-enqueue dead letters with fresh attempts, their rows reopened (exit 1 if any was refused, with why)."""
    from libs.broker import build_broker
    from libs.deadletters import actions
    from libs.errors import RecordNotFoundError

    db = _db(settings)
    if args.id is not None:
        row = actions.get(db, args.id)
        if row.replayed_at is not None:
            print(f"dead letter {args.id} was already replayed at {row.replayed_at}; nothing enqueued")
            return EXIT_OK
        ids = [args.id]
    elif args.queue or args.all:
        ids = actions.matching_ids(db, _filter(args, only_dead=True))
    else:
        raise UsageError("replay needs an ID, --queue Q or --all")
    broker = build_broker(settings)
    refused: dict[int, str] = {}
    done = actions.replay(db, broker.enqueue, ids, dry_run=args.dry_run, refused=refused)
    for dead_letter_id, reason in refused.items():
        print(f"zapq: dead letter {dead_letter_id} not replayed: {reason}", file=sys.stderr)
    if args.id is not None and not done and not refused:
        raise RecordNotFoundError(f"dead letter {args.id} is being replayed by someone else")
    if done and not args.dry_run:
        _audit(db, "replay_dead_letters", done)
    verb = "would replay" if args.dry_run else "replayed"
    data: dict[str, Any] = {"replayed": done, "dry_run": args.dry_run}
    if refused:
        data["refused"] = refused
    print_result(data, args.json, lambda d: f"{verb} {len(done)}: {done}")
    return EXIT_FAILED if refused else EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Delete dead letters by id or age."""
    from libs.deadletters import actions

    db = _db(settings)
    if args.id is not None:
        actions.get(db, args.id)
        count = actions.purge(db, ids=[args.id])
    elif args.older_than:
        count = actions.purge(db, older_than=dt.datetime.now(dt.UTC) - parse_duration(args.older_than))
    else:
        raise UsageError("purge needs an ID or --older-than AGE")
    _audit(db, "purge_dead_letters", [args.id] if args.id is not None else [], older_than=args.older_than, purged=count)
    print_result({"purged": count}, args.json, lambda d: f"purged {count}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``dlq list|show|replay|purge`` to the ``zapq`` subparsers."""
    dlq = sub.add_parser("dlq", help="dead-letter ledger: list, show, replay, purge").add_subparsers(
        dest="dlq_command", required=True
    )

    def common(p: argparse.ArgumentParser, *, filters: bool = True) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if filters:
            p.add_argument("--queue", help="only this original queue")
            p.add_argument("--since", help="ISO time or duration ago (e.g. 2h)")

    p = dlq.add_parser("list", help="newest dead letters first")
    common(p)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_dlq_list)

    p = dlq.add_parser("show", help="one dead letter in full")
    p.add_argument("id", type=int)
    common(p, filters=False)
    p.set_defaults(func=cmd_dlq_show)

    p = dlq.add_parser("replay", help="re-enqueue with fresh attempts (each row at most once)")
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--all", action="store_true", help="every dead letter not yet replayed")
    p.add_argument("--dry-run", action="store_true")
    common(p)
    p.set_defaults(func=cmd_dlq_replay)

    p = dlq.add_parser("purge", help="delete by id or age")
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--older-than", help="e.g. 90d")
    common(p, filters=False)
    p.set_defaults(func=cmd_dlq_purge)
