"""``zapq connection create|list|patch``: WhatsApp connections through the API (``/api/connections``).

Secrets (``--access-token``, ``--bridge-api-key``) go in and are never printed: the API answers
``has_access_token: true``. With the fake Meta of ``./dev up`` the token is ``fake-meta-token``.
"""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_OK, UsageError, key_values, print_result, table

COLUMNS = ("id", "company_id", "provider", "name", "status", "status_reason", "phone_number_id", "bridge_instance")
#: Options → API fields, shared by ``create`` and ``patch``.
FIELDS = ("name", "phone_number_id", "access_token", "waba_id", "display_phone_number", "bridge_url",
          "bridge_instance", "bridge_api_key", "rate_per_second")  # fmt: skip


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def cmd_create(args: argparse.Namespace, api: ApiClient) -> int:
    """Create a connection; print its id (``--json``: the connection, secrets as ``has_…``)."""
    body = {"company_id": args.company, "provider": args.provider, **_fields(args, FIELDS)}
    connection = api.call("POST", "/api/connections", json=body)
    print_result(connection, args.json, lambda c: str(c["id"]))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, api: ApiClient) -> int:
    """Connections with their health."""
    params = {"company_id": args.company} if args.company is not None else {}
    rows = api.call("GET", "/api/connections", params=params)
    print_result(rows, args.json, lambda r: table(r, COLUMNS))
    return EXIT_OK


def cmd_patch(args: argparse.Namespace, api: ApiClient) -> int:
    """Change the given fields (``--activate``: make it active again)."""
    names = tuple(n for n in FIELDS if n not in ("phone_number_id", "bridge_instance"))
    body: dict[str, Any] = _fields(args, names)
    if args.activate:
        body["status"] = "active"
    if not body:
        raise UsageError("nothing to change: give at least one option (see zapq connection patch --help)")
    connection = api.call("PATCH", f"/api/connections/{args.id}", json=body)
    print_result(connection, args.json, lambda c: key_values({k: c.get(k) for k in COLUMNS}))
    return EXIT_OK


def _options(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument("--name")
    if create:
        p.add_argument("--phone-number-id", help="meta: the number's phone_number_id")
        p.add_argument("--bridge-instance", help="baileys: the Evolution API instance")
    p.add_argument("--access-token", help="meta: the Graph API token (secret; never printed)")
    p.add_argument("--waba-id", help="meta: the WhatsApp Business Account id")
    p.add_argument("--display-phone-number")
    p.add_argument("--bridge-url", help="baileys: the bridge's base URL")
    p.add_argument("--bridge-api-key", help="baileys: the bridge's API key (secret; never printed)")
    p.add_argument("--rate-per-second", type=int, metavar="N", help="send rate limit of this number")


def register(sub: Any) -> None:
    """Add ``connection create|list|patch``."""
    command = api_group(
        sub, "connection", summary="connections: create, list, patch", dest="connection_command", client=ApiClient
    )
    p = command("create", cmd_create, "create a Meta or Baileys connection; prints its id")
    p.add_argument("--company", type=int, required=True, metavar="ID")
    p.add_argument("--provider", choices=("meta", "baileys"), required=True)
    _options(p, create=True)
    p = command("list", cmd_list, "connections and their health")
    p.add_argument("--company", type=int, metavar="ID")
    p = command("patch", cmd_patch, "change a connection (new credentials, rate, --activate)")
    p.add_argument("id", type=int, metavar="CONNECTION_ID")
    _options(p, create=False)
    p.add_argument("--activate", action="store_true", help="make an inactive connection active again")
