"""``zapq company create|list``: companies (tenants) through the API (``/api/companies``)."""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_OK, print_result, table


def cmd_create(args: argparse.Namespace, api: ApiClient) -> int:
    """Create a company; print its id (``--json``: the company)."""
    body: dict[str, Any] = {"name": args.name}
    if args.campaign_weight is not None:
        body["campaign_weight"] = args.campaign_weight
    company = api.call("POST", "/api/companies", json=body)
    print_result(company, args.json, lambda c: str(c["id"]))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, api: ApiClient) -> int:
    """The companies, newest first."""
    rows = api.call("GET", "/api/companies")
    print_result(rows, args.json, lambda r: table(r, ("id", "name", "campaign_weight", "created_at")))
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``company create|list``."""
    command = api_group(sub, "company", summary="companies: create, list", dest="company_command", client=ApiClient)
    p = command("create", cmd_create, "create a company; prints its id")
    p.add_argument("--name", required=True)
    p.add_argument("--campaign-weight", type=int, metavar="N", help="its share of campaign sends (default 1)")
    command("list", cmd_list, "companies, newest first")
