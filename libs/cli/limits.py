"""``zapq limits [--connection ID] [--refresh] [--json]``: each Meta number's messaging-limit budget.

Reads Postgres and Redis directly (:func:`libs.rules.tiers.report`): the portfolio a number shares its limit
with, the limit and where it came from (``setting``: ``ZAPQ_MESSAGING_LIMIT``, ``connection``: an override,
``meta``: the tier Meta reported, ``unknown``), the number's quality rating and throughput, the recipients
reached in the last 24 h and the campaign sends waiting for budget. ``--refresh`` first reads each number's
fields from the Graph API (as the scheduler does every hour; a number newly RED pauses its campaigns).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from libs.cli.output import EXIT_FAILED, EXIT_OK, print_result, table
from libs.settings import Settings

COLUMNS = ("connection", "company", "portfolio", "limit", "source", "tier", "quality", "throughput", "reached_24h",
           "waiting", "last_event")  # fmt: skip


def cmd_limits(args: argparse.Namespace, settings: Settings) -> int:
    """Print the budgets (after reading Meta's fields with ``--refresh``); exit 1 if a refresh failed."""
    import httpx

    from libs.db.engine import Database
    from libs.redis_clients import redis_client
    from libs.rules import tiers
    from libs.rules.budget import Budget
    from libs.secrets import Secrets

    db = Database.from_settings(settings, pool_size=1)
    client = redis_client(settings)
    failed: list[dict[str, Any]] = []
    try:
        if args.refresh:
            with httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
                results = tiers.refresh_from_meta(
                    db,
                    http,
                    graph_url=settings.meta_graph_url,
                    api_version=settings.meta_api_version,
                    secrets=Secrets(settings.secrets_key_list),
                    connection_id=args.connection,
                )
            failed = [r for r in results if "error" in r]
        rows = tiers.report(db, client, Budget.from_settings(settings), args.connection)
    finally:
        db.close()
        client.close()
    print_result(rows, args.json, lambda rs: table(rs, COLUMNS))
    for result in failed:
        print(f"zapq: connection {result['id']}: Meta's fields not read: {result['error']}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: Any) -> None:
    """Add ``limits`` to the ``zapq`` subparsers."""
    p = sub.add_parser("limits", help="each Meta number's messaging-limit budget (tier, quality, reached, waiting)")
    p.add_argument("--connection", type=int, metavar="ID", help="only this connection")
    p.add_argument("--refresh", action="store_true", help="read each number's fields from the Graph API first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_limits)
