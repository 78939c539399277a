"""``zapq migrate``: create the database if it is missing and upgrade it. Registered by :func:`register`."""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.output import EXIT_OK
from libs.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Create the database if missing and upgrade it."""
    from libs.db.migrate import upgrade

    upgrade(settings.sqlalchemy_url, args.revision, secrets_keys=settings.secrets_key_list)
    print(f"database at revision {args.revision}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``migrate`` to the ``zapq`` subparsers."""
    migrate = sub.add_parser("migrate", help="create the database if missing and upgrade it")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)
