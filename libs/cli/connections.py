"""``zapq connections list|add|webhook-secret``: WhatsApp connections from the command line.

A thin client of ``/api/connections``, which checks everything (a bridge URL through the outbound address
guard, the same as for webhook endpoints) and stores credentials encrypted; its refusals become exit codes in
:mod:`libs.cli.api`. The credential (Meta access token, bridge API key) is read from standard input, never
from the command line, where ``ps`` and the shell history would keep it. Registered by :func:`register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_OK, UsageError, print_result, table

BASE = "/api/connections"


class ConnectionsApi(ApiClient):
    """The connection routes of zapq's API."""

    def list(self, company_id: int | None) -> list[dict[str, Any]]:
        """``GET /api/connections[?company_id=N]``."""
        params = {"company_id": company_id} if company_id is not None else {}
        return list(self.call("GET", BASE, params=params))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/connections`` → the connection (a Baileys one with its webhook URL and secret, once)."""
        return dict(self.call("POST", BASE, json=body))

    def issue_webhook_secret(self, connection_id: int) -> dict[str, Any]:
        """``POST /api/connections/{id}/webhook-secret``."""
        return dict(self.call("POST", f"{BASE}/{connection_id}/webhook-secret"))


def render_list(connections: list[dict[str, Any]]) -> str:
    """The connections with their status."""
    rows = [
        {
            "id": c["id"],
            "company": c["company_id"],
            "provider": c["provider"],
            "number": c.get("phone_number_id") or c.get("bridge_instance") or "",
            "bridge": c.get("bridge_url") or "",
            "status": c["status"] + (f": {c['status_reason']}" if c.get("status_reason") else ""),
        }
        for c in connections
    ]
    return table(rows, ["id", "company", "provider", "number", "bridge", "status"])


def _webhook_lines(connection: dict[str, Any]) -> list[str]:
    if "webhook_secret" not in connection:
        return []
    return [
        f"webhook {connection['webhook_path']}",
        f"secret {connection['webhook_secret']}",
        "(shown this once: configure the bridge to post there with the header x-zapq-secret)",
    ]


def _credential() -> str:
    value = sys.stdin.readline().strip()
    if not value:
        raise UsageError("give the access token / bridge API key on standard input")
    return value


def cmd_list(args: argparse.Namespace, api: ConnectionsApi) -> int:
    """Every connection (of one company)."""
    print_result(api.list(args.company), args.json, render_list)
    return EXIT_OK


def cmd_add(args: argparse.Namespace, api: ConnectionsApi) -> int:
    """Create a connection; a Baileys one prints its webhook URL and secret (the only time they are shown)."""
    body: dict[str, Any] = {"company_id": args.company, "provider": args.provider, "name": args.name}
    if args.provider == "meta":
        if args.phone_number_id is None:
            raise UsageError("a meta connection needs --phone-number-id")
        body.update(phone_number_id=args.phone_number_id, access_token=_credential())
    else:
        if args.bridge_url is None or args.instance is None:
            raise UsageError("a baileys connection needs --bridge-url and --instance")
        body.update(bridge_url=args.bridge_url, bridge_instance=args.instance, bridge_api_key=_credential())
    created = api.create(body)
    print_result(created, args.json, lambda c: "\n".join([f"connection {c['id']}", *_webhook_lines(c)]))
    return EXIT_OK


def cmd_webhook_secret(args: argparse.Namespace, api: ConnectionsApi) -> int:
    """A new webhook URL and secret for a Baileys connection (printed once; the old ones stop working)."""
    issued = api.issue_webhook_secret(args.id)
    print_result(issued, args.json, lambda c: "\n".join([f"connection {c['id']}", *_webhook_lines(c)]))
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``connections list|add|webhook-secret`` to the ``zapq`` subparsers."""
    command = api_group(
        sub, "connections", summary="WhatsApp connections", dest="connections_command", client=ConnectionsApi
    )
    p = command("list", cmd_list, "connections and their status")
    p.add_argument("--company", type=int, metavar="ID", help="only this company's connections")
    p = command("add", cmd_add, "create a connection (its credential read from standard input)")
    p.add_argument("--company", type=int, required=True, metavar="ID")
    p.add_argument("--provider", choices=("meta", "baileys"), required=True)
    p.add_argument("--name", default="")
    p.add_argument("--phone-number-id", help="meta: the number's phone_number_id")
    p.add_argument("--bridge-url", help="baileys: the bridge's base URL (https:// in prod, public addresses only)")
    p.add_argument("--instance", help="baileys: the bridge instance name")
    p = command("webhook-secret", cmd_webhook_secret, "a new webhook URL and secret for a Baileys connection")
    p.add_argument("id", type=int)
