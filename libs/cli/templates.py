"""``zapq templates sync|list``: Meta connections' template catalogues through zapq's HTTP API
(``/api/templates``).

Exit codes as for the other API commands: 0 ok (``sync`` of several connections: every one synced), 1 the API
unreachable or Meta refusing the template list (a bad token, …; also when one of several connections failed),
2 refused (not a Meta connection, no ``waba_id``), 3 no such connection. Registered on the ``zapq`` parser by
:func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_FAILED, EXIT_OK, print_result, table


def _line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"connection {result['connection_id']}: failed: {result['error']}"
    paused = f", paused campaigns {result['paused_campaigns']}" if result["paused_campaigns"] else ""
    return (
        f"connection {result['connection_id']}: {result['templates']} templates "
        f"({result['removed']} removed){paused}, synced at {result['synced_at']}"
    )


def cmd_sync(args: argparse.Namespace, api: ApiClient) -> int:
    """Sync one connection's catalogue, or every Meta connection's of a company (or of all)."""
    body: dict[str, Any] = {}
    if args.connection is not None:
        body["connection_id"] = args.connection
    elif args.company is not None:
        body["company_id"] = args.company
    answer = api.call("POST", "/api/templates/sync", json=body)
    results = answer["results"]
    print_result(results, args.json, lambda rs: "\n".join(_line(r) for r in rs))
    return EXIT_FAILED if any("error" in r for r in results) else EXIT_OK


def cmd_list(args: argparse.Namespace, api: ApiClient) -> int:
    """The templates (all pages) of a company or connection, by connection, name and language."""
    params: dict[str, Any] = {"limit": 1000}
    for name, value in (("company_id", args.company), ("connection_id", args.connection), ("status", args.status)):
        if value is not None:
            params[name] = value
    rows: list[dict[str, Any]] = []
    while True:
        page = api.call("GET", "/api/templates", params=params)
        rows += page["templates"]
        if not page["has_more"]:
            break
        params["after"] = page["after"]
    columns = ("connection_id", "name", "language", "status", "category", "reason")
    print_result(rows, args.json, lambda rs: table(rs, columns))
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``templates`` and its subcommands to the ``zapq`` subparsers."""
    command = api_group(
        sub, "templates", summary="WhatsApp template catalogues of Meta connections", dest="templates_command",
        client=ApiClient,
    )  # fmt: skip
    p = command("sync", cmd_sync, "sync template catalogues from Meta now")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--connection", type=int, metavar="ID", help="just this connection")
    which.add_argument("--company", type=int, metavar="ID", help="every Meta connection of this company")
    p = command("list", cmd_list, "the templates zapq knows, with their status")
    p.add_argument("--company", type=int, metavar="ID")
    p.add_argument("--connection", type=int, metavar="ID")
    p.add_argument("--status", help="APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …")
