"""``zapq opt-outs list|add|rm|import``: a company's opt-out list through zapq's HTTP API (``/api/opt-outs``).

Exit codes as for ``zapq campaign``: 0 ok, 1 API unreachable or failing, 2 refused (a bad number, an unknown
company, a CSV with a bad row: nothing imported), 3 the number is not on the list (``rm``). Registered on the
``zapq`` parser by :func:`register`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from libs.cli.api import API_URL_HELP, ApiClient, with_api
from libs.cli.output import EXIT_OK, UsageError, print_result


def cmd_list(args: argparse.Namespace, api: ApiClient) -> int:
    """Every number on the company's list (all pages), one per line."""
    rows: list[dict[str, Any]] = []
    after = ""
    while True:
        page = api.call("GET", "/api/opt-outs", params={"company_id": args.company, "after": after, "limit": 1000})
        rows += page["opt_outs"]
        if not page["has_more"]:
            break
        after = page["after"]
    print_result(rows, args.json, lambda rs: "\n".join(f"{r['phone']}  {r['source']}  {r['created_at']}" for r in rs))
    return EXIT_OK


def cmd_add(args: argparse.Namespace, api: ApiClient) -> int:
    """Put numbers on the list."""
    result = api.call("POST", "/api/opt-outs", json={"company_id": args.company, "phones": args.phone, "source": "cli"})
    print_result(result, args.json, lambda r: f"added {r['added']} ({r['already']} already on the list)")
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, api: ApiClient) -> int:
    """Take one number off the list."""
    api.call("DELETE", f"/api/opt-outs/{args.phone}", params={"company_id": args.company})
    print("removed")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, api: ApiClient) -> int:
    """Import a CSV with a ``phone`` column (``-``: stdin); all or nothing."""
    try:
        content = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    result = api.call(
        "POST",
        "/api/opt-outs/import",
        params={"company_id": args.company},
        content=content,
        headers={"content-type": "text/csv"},
    )
    print_result(result, args.json, lambda r: f"{r['rows']} rows: added {r['added']}, {r['already']} already listed")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``opt-outs`` and its subcommands to the ``zapq`` subparsers."""
    group = sub.add_parser("opt-outs", help="a company's opt-out list (numbers campaigns and sends skip)")
    commands = group.add_subparsers(dest="opt_outs_command", required=True)

    def command(name: str, func: Any, summary: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=summary)
        p.add_argument("--company", type=int, required=True, metavar="ID")
        p.add_argument("--json", action="store_true", help="the answer as JSON")
        p.add_argument("--api-url", help=API_URL_HELP)
        p.set_defaults(func=with_api(func, ApiClient))
        return p

    command("list", cmd_list, "every number on the list")
    p = command("add", cmd_add, "put numbers on the list")
    p.add_argument("phone", nargs="+", metavar="PHONE")
    p = command("rm", cmd_rm, "take a number off the list")
    p.add_argument("phone", metavar="PHONE")
    p = command("import", cmd_import, "import a CSV with a 'phone' column ('-': stdin); all or nothing")
    p.add_argument("file", metavar="FILE.csv")
