"""``zapq dev up|seed|webhook``: the local development stack.

``up`` runs every process of ``deploy/Procfile.dev`` under zapq's own supervisor (:mod:`libs.ops.up`): clean
stops on Ctrl-C, the demo company seeded, the next-steps block printed. ``seed`` creates (or finds) the demo
company and its connection to the fake Meta through the API (compose runs it once the API is up). ``webhook``
posts a signed Meta webhook carrying an inbound text, as Meta would, to the webhook-ingest API.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from libs.cli.api import API_URL_HELP, api_url
from libs.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_result
from libs.settings import Settings

DEFAULT_INGEST_URL = "http://127.0.0.1:8000"
DEFAULT_SENDER = "16505551234"


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Run the whole stack until Ctrl-C."""
    from libs.ops.up import read_procfile, run_up

    specs = read_procfile(Path(args.procfile)) if args.procfile else None
    return run_up(settings, specs=specs, grace=args.grace)


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    """Create or find the demo rows; print them and the next-steps block."""
    from libs.ops.seed import SeedError, next_steps, seed_demo

    url = api_url(args, settings)
    headers = {"authorization": f"Bearer {settings.api_token}", "user-agent": "zapq-cli"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            stack = seed_demo(http)
    except SeedError as exc:
        print(f"zapq: could not seed the demo rows: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_result(dataclasses.asdict(stack), True, str)
    else:
        made = "created" if stack.created else "found"
        print(f"demo company {stack.company_id}, connection {stack.connection_id} ({made})")
        print(next_steps(settings, stack, api_url=url))
    return EXIT_OK


def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    """POST one signed inbound-text webhook; print the webhook id and the wamid."""
    from libs.ops.demo import sample_webhook
    from libs.ops.seed import DEMO_PHONE_NUMBER_ID
    from libs.whatsapp.signature import sign_meta

    url = (args.ingest_url or DEFAULT_INGEST_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"zapq: bad ingest URL {url!r}: use http://host:port", file=sys.stderr)
        return EXIT_USAGE
    sender = "".join(ch for ch in args.sender if ch.isdigit())
    if not 7 <= len(sender) <= 15:
        print("zapq: --from must be a phone number (7 to 15 digits)", file=sys.stderr)
        return EXIT_USAGE
    wamid = f"wamid.DEV{uuid.uuid4().hex.upper()}"
    body = sample_webhook(
        wamid, args.phone_number_id or DEMO_PHONE_NUMBER_ID, sender=sender, name=args.name, text=args.text
    )
    headers = {"content-type": "application/json", "x-hub-signature-256": sign_meta(body, settings.meta_app_secret)}
    try:
        response = httpx.post(f"{url}/webhooks/meta", content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"zapq: cannot reach the webhook-ingest API at {url} ({exc}); is it running?", file=sys.stderr)
        return EXIT_FAILED
    if response.status_code != 200:
        print(f"zapq: the webhook was refused: HTTP {response.status_code} {response.text[:200]}", file=sys.stderr)
        return EXIT_USAGE if response.status_code < 500 else EXIT_FAILED
    result: dict[str, Any] = {"webhook_id": response.json().get("id"), "wamid": wamid, "from": sender}
    print_result(result, args.json, lambda r: f"webhook {r['webhook_id']} accepted: inbound message {r['wamid']}")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``dev up|seed|webhook`` to the ``zapq`` subparsers."""
    group = sub.add_parser("dev", help="the local development stack: up, seed, webhook")
    commands = group.add_subparsers(dest="dev_command", required=True)

    p = commands.add_parser("up", help="every process of deploy/Procfile.dev until Ctrl-C (then a clean stop)")
    p.add_argument("--grace", type=float, default=60.0, help="seconds the processes get to drain on stop")
    p.add_argument("--procfile", metavar="PATH", help="another Procfile (default: deploy/Procfile.dev)")
    p.set_defaults(func=cmd_up)

    p = commands.add_parser("seed", help="create (or find) the demo company and its connection to the fake Meta")
    p.add_argument("--api-url", help=API_URL_HELP)
    p.add_argument("--json", action="store_true", help="the ids as JSON")
    p.set_defaults(func=cmd_seed)

    p = commands.add_parser("webhook", help="post a signed Meta webhook: a customer's text to the demo number")
    p.add_argument("--text", required=True, help="the customer's message")
    p.add_argument("--from", dest="sender", default=DEFAULT_SENDER, metavar="PHONE", help="the customer's number")
    p.add_argument("--name", default="Ana", help="the customer's profile name")
    p.add_argument("--phone-number-id", help="the receiving Meta number (default: the demo connection's)")
    p.add_argument("--ingest-url", help=f"webhook-ingest API base URL (default {DEFAULT_INGEST_URL})")
    p.add_argument("--json", action="store_true", help="the ids as JSON")
    p.set_defaults(func=cmd_webhook)
