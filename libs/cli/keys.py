"""``zapq keys create|list|revoke`` and ``zapq audit``: API keys and the audit log, straight on the database.

Every change made here is written to the audit log with the actor ``cli``. A key's text is printed once, at
creation; only its hash is stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from libs.cli.output import EXIT_OK, UsageError, print_result, table
from libs.settings import Settings
from libs.timeparse import TimeParseError, parse_since, parse_time


def _db(settings: Settings) -> Any:
    from libs.db.engine import Database

    return Database.from_settings(settings, pool_size=1)


def record(session: Any, action: str, target: str | None, **details: Any) -> None:
    """Write a change made from the command line to the audit log (in the change's transaction)."""
    from libs.access.keys import CLI_ACTOR
    from libs.audit import store

    store.record_sync(session, actor=CLI_ACTOR, company_id=None, action=action, target=target, details=details or None)


def _expiry(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return parse_time(text, ahead=True, option="--expires")
    except TimeParseError as exc:
        raise UsageError(str(exc)) from None


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a key and print its text (shown this once)."""
    from libs.access import actions
    from libs.access.keys import InvalidKeyRequestError

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    request = actions.KeyRequest(
        company_id=args.company, scopes=scopes, name=args.name, expires_at=_expiry(args.expires)
    )
    try:
        with _db(settings).session() as session:
            row = actions.create_key_sync(session, request)
            record(session, "create_key", row["key_id"], company_id=args.company, scopes=row["scopes"])
    except InvalidKeyRequestError as exc:
        raise UsageError(str(exc)) from None
    print_result(row, args.json, lambda r: f"{r['key']}\n(key {r['key_id']}: shown once, store it now)")
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """List keys (never their text)."""
    from libs.access import store

    with _db(settings).session() as session:
        rows = store.listed_sync(session, args.company)
    columns = ["key_id", "company_id", "name", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]
    print_result(rows, args.json, lambda rs: table(rs, columns))
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key (API processes refuse it within their key cache time)."""
    from libs.access import actions

    with _db(settings).session() as session:
        row = actions.revoke_key_sync(session, args.key_id)
        record(session, "revoke_key", args.key_id)
    print_result(row, args.json, lambda r: f"revoked {r['key_id']} at {r['revoked_at']}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Changes made through the API and the CLI, newest first."""
    from libs.audit import store

    since = parse_since(args.since) if args.since else None
    with _db(settings).session() as session:
        rows = store.newest_sync(session, since=since, company_id=args.company, limit=args.limit)
    print_result(rows, args.json, lambda rs: table(rs, ["at", "actor", "company_id", "action", "target"]))
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``keys create|list|revoke`` and ``audit`` to the ``zapq`` subparsers."""
    keys = sub.add_parser("keys", help="API keys: create, list, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create", help="a new key (its text is printed once)")
    p.add_argument("--company", type=int, help="the company it is limited to (none: every company)")
    p.add_argument("--scopes", required=True, help="comma-separated, e.g. messages:read,messages:write")
    p.add_argument("--name", default="", help="what it is for")
    p.add_argument("--expires", help="duration from now (30d) or ISO time; default: never")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_keys_create)

    p = keys.add_parser("list", help="keys, newest first (never their text)")
    p.add_argument("--company", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_keys_list)

    p = keys.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_keys_revoke)

    p = sub.add_parser("audit", help="changes made through the API and the CLI, newest first")
    p.add_argument("--since", help="ISO time or duration ago (e.g. 2h)")
    p.add_argument("--company", type=int)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_audit)
