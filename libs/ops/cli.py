"""The ``zapq`` command line.

Exit codes: 0 success, 1 operation failed, 2 bad usage or input (argparse's convention), 3 not found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from libs.settings import Settings, SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3

DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """Bad input on the command line (exit code 2)."""


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` → timedelta."""
    match = DURATION.match(text.strip())
    if not match:
        raise UsageError(f"bad duration {text!r}: use a number and s/m/h/d/w, e.g. 90d")
    return dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def parse_since(text: str) -> dt.datetime:
    """An ISO timestamp or a duration ago (``2h`` = two hours ago)."""
    try:
        return dt.datetime.now(dt.UTC) - parse_duration(text)
    except UsageError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"bad --since {text!r}: use an ISO time or a duration like 2h") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _print(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render(data))


# -- migrate -------------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Create the database if missing and upgrade it."""
    from libs.db.migrate import upgrade

    upgrade(settings.sqlalchemy_url, args.revision)
    print(f"database at revision {args.revision}")
    return EXIT_OK


# -- dlq -----------------------------------------------------------------------------------------------


def _dead_letter_dict(row: Any, *, full: bool = False) -> dict[str, Any]:
    from libs.deadletters.ledger import as_dict

    return as_dict(row, full=full)


#: Characters of a value a table shows (the column is no wider).
TABLE_CELL_CHARS = 60


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as columns under upper-case headers, each value cut to :data:`TABLE_CELL_CHARS`."""
    if not rows:
        return "(none)"
    cells = [[(str(r[c]) if r.get(c) is not None else "")[:TABLE_CELL_CHARS] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _db(settings: Settings) -> Any:
    from libs.db.engine import Database

    return Database.from_url(settings.sqlalchemy_url, pool_size=2)


def _filter(args: argparse.Namespace, **extra: Any) -> Any:
    from libs.deadletters.ledger import Filter

    return Filter(queue=args.queue, since=parse_since(args.since) if args.since else None, **extra)


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dead letters, newest first."""
    from libs.deadletters import ledger

    rows = [_dead_letter_dict(r) for r in ledger.list_rows(_db(settings), _filter(args), limit=args.limit)]
    _print(
        rows,
        args.json,
        lambda rs: _table(rs, ["id", "queue", "actor", "reason", "error_type", "attempts", "state", "last_failed_at"]),
    )
    return EXIT_OK


def cmd_dlq_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one dead letter in full."""
    from libs.deadletters import ledger

    data = _dead_letter_dict(ledger.get(_db(settings), args.id), full=True)
    _print(data, args.json, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Re-enqueue dead letters with fresh attempts, their rows reopened (exit 1 if any was refused, with why)."""
    from libs.broker import build_broker
    from libs.deadletters import ledger
    from libs.errors import RecordNotFoundError

    db = _db(settings)
    if args.id is not None:
        row = ledger.get(db, args.id)
        if row.replayed_at is not None:
            print(f"dead letter {args.id} was already replayed at {row.replayed_at}; nothing enqueued")
            return EXIT_OK
        ids = [args.id]
    elif args.queue or args.all:
        ids = ledger.matching_ids(db, _filter(args, only_dead=True))
    else:
        raise UsageError("replay needs an ID, --queue Q or --all")
    broker = build_broker(settings)
    refused: dict[int, str] = {}
    done = ledger.replay(db, broker.enqueue, ids, dry_run=args.dry_run, refused=refused)
    for dead_letter_id, reason in refused.items():
        print(f"zapq: dead letter {dead_letter_id} not replayed: {reason}", file=sys.stderr)
    if args.id is not None and not done and not refused:
        raise RecordNotFoundError(f"dead letter {args.id} is being replayed by someone else")
    verb = "would replay" if args.dry_run else "replayed"
    data: dict[str, Any] = {"replayed": done, "dry_run": args.dry_run}
    if refused:
        data["refused"] = refused
    _print(data, args.json, lambda d: f"{verb} {len(done)}: {done}")
    return EXIT_FAILED if refused else EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Delete dead letters by id or age."""
    from libs.deadletters import ledger

    db = _db(settings)
    if args.id is not None:
        ledger.get(db, args.id)
        count = ledger.purge(db, ids=[args.id])
    elif args.older_than:
        count = ledger.purge(db, older_than=dt.datetime.now(dt.UTC) - parse_duration(args.older_than))
    else:
        raise UsageError("purge needs an ID or --older-than AGE")
    _print({"purged": count}, args.json, lambda d: f"purged {count}")
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the end-to-end demo."""
    from libs.ops.demo import run_demo

    return run_demo(settings, keep_running=args.keep_running)


# -- parser --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``zapq`` argument parser."""
    parser = argparse.ArgumentParser(prog="zapq", description="zapq: WhatsApp job processing on Dramatiq.")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="create the database if missing and upgrade it")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    from libs.ops.cli_stats import add_stats_commands

    add_stats_commands(sub)  # stats, job, top

    from libs.ops.cli_campaign import add_campaign_commands

    add_campaign_commands(sub)  # campaign create|import|start|pause|resume|cancel|status|list

    from libs.ops.cli_send import add_send_command

    add_send_command(sub)  # send

    from libs.ops.cli_events import add_events_commands

    add_events_commands(sub)  # events tail|list|show

    from libs.ops.cli_endpoints import add_endpoints_commands

    add_endpoints_commands(sub)  # endpoints list|add|rm|test|enable|disable|rotate-secret|replay

    demo = sub.add_parser("demo", help="start the system, send a signed webhook, show it processed, stop")
    demo.add_argument("--keep-running", action="store_true", help="leave the processes up until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zapq`` console script."""
    from libs.errors import RecordNotFoundError, ZapqError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except SettingsError as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RecordNotFoundError as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ZapqError as exc:  # e.g. the database is unreachable: "operation failed", not a traceback
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
