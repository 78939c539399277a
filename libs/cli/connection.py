"""``zapq connection create|list|patch|webhook-secret``: WhatsApp connections through the API (``/api/connections``).

The API checks everything (a bridge URL through the outbound address guard, as for webhook endpoints) and
stores credentials encrypted; its refusals become exit codes in :mod:`libs.cli.api`. Secrets
(``--access-token``, ``--bridge-api-key``) go in and are never printed: the API answers ``has_access_token:
true``. Give ``-`` as their value to read them from standard input, out of ``ps`` and the shell history. With
the fake Meta of ``./dev up`` the token is ``fake-meta-token``. A Baileys connection's webhook URL and secret
are printed once, when it is created or given new ones (``webhook-secret``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_OK, UsageError, key_values, print_result, table

COLUMNS = ("id", "company_id", "provider", "name", "status", "status_reason", "phone_number_id", "bridge_instance")
#: Options → API fields, shared by ``create`` and ``patch``.
FIELDS = ("name", "phone_number_id", "access_token", "waba_id", "display_phone_number", "bridge_url",
          "bridge_instance", "bridge_api_key", "rate_per_second", "service_window", "portfolio_id",
          "messaging_limit")  # fmt: skip


#: Options whose value ``-`` means "read it from standard input".
SECRETS = ("access_token", "bridge_api_key")


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    fields = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    for name in SECRETS:
        if fields.get(name) == "-":
            fields[name] = sys.stdin.readline().strip()
            if not fields[name]:
                raise UsageError(f"--{name.replace('_', '-')} -: nothing on standard input")
    return fields


def _created(connection: dict[str, Any]) -> str:
    """Its id, and a Baileys connection's webhook URL and secret (in the answer this once)."""
    lines = [str(connection["id"])]
    if "webhook_secret" in connection:
        lines += [
            f"webhook {connection['webhook_path']}",
            f"secret {connection['webhook_secret']}",
            "(shown this once: configure the bridge to post there with the header x-zapq-secret)",
        ]
    return "\n".join(lines)


def cmd_create(args: argparse.Namespace, api: ApiClient) -> int:
    """Create a connection; print its id (``--json``: the connection, secrets as ``has_…``)."""
    body = {"company_id": args.company, "provider": args.provider, **_fields(args, FIELDS)}
    connection = api.call("POST", "/api/connections", json=body)
    print_result(connection, args.json, _created)
    return EXIT_OK


def cmd_webhook_secret(args: argparse.Namespace, api: ApiClient) -> int:
    """A new webhook URL and secret for a Baileys connection (printed once; the old ones stop working)."""
    print_result(api.call("POST", f"/api/connections/{args.id}/webhook-secret"), args.json, _created)
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
    p.add_argument("--access-token", help="meta: the Graph API token (secret; never printed; - reads stdin)")
    p.add_argument("--waba-id", help="meta: the WhatsApp Business Account id")
    p.add_argument("--display-phone-number")
    p.add_argument("--bridge-url", help="baileys: the bridge's base URL")
    p.add_argument("--bridge-api-key", help="baileys: the bridge's API key (secret; never printed; - reads stdin)")
    p.add_argument("--rate-per-second", type=int, metavar="N", help="send rate limit of this number")
    p.add_argument("--portfolio-id", help="meta: the business portfolio sharing this number's messaging limit")
    p.add_argument(
        "--messaging-limit", type=int, metavar="N", help="meta: override the portfolio's messaging limit (per 24 h)"
    )
    p.add_argument(
        "--service-window",
        choices=("enforce", "off"),
        help="free-form text only within 24 h of the contact's last message (enforce, the default) or always "
        "(off: test numbers)",
    )


def register(sub: Any) -> None:
    """Add ``connection create|list|patch|webhook-secret``."""
    command = api_group(
        sub,
        "connection",
        summary="connections: create, list, patch, webhook-secret",
        dest="connection_command",
        client=ApiClient,
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
    p = command("webhook-secret", cmd_webhook_secret, "a new webhook URL and secret for a Baileys connection")
    p.add_argument("id", type=int, metavar="CONNECTION_ID")
