"""``zapq send`` / ``zapq retry``: one outbound message through zapq's HTTP API (``POST /api/messages``), as a
producer sends it: text, template, or another kind (:mod:`libs.cli.send_kinds`).

The API stores the message ``queued`` and enqueues its send job on the tier's queue; the command prints the
message id and the job id. ``--idempotency-key`` is sent as the ``Idempotency-Key`` header: a repeat answers
the stored message and enqueues nothing. ``zapq retry ID`` sends a failed message again
(``POST /api/messages/{id}/retry``; exit 2 with the reason when it is not failed, 3 when it does not exist).
Registered on the ``zapq`` parser by :func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli import send_kinds
from libs.cli.api import API_URL_HELP, ApiClient, with_api
from libs.cli.output import EXIT_OK, UsageError, print_result
from libs.contracts import TIER_QUEUES


def message_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``MessageIn`` body for the arguments; options the API would default are left out."""
    body: dict[str, Any] = {"company_id": args.company, "to": args.to}
    if args.priority is not None:
        body["priority"] = args.priority
    if args.connection is not None:
        body["connection_id"] = args.connection
    if args.template is None and (args.language is not None or args.variable):
        raise UsageError("--language and --variable go with --template")
    kind = send_kinds.kind_fields(args)
    if "interactive" in kind:  # --text is the body of the buttons or list
        return {**body, **kind}
    if args.template is None:
        if args.text is not None:
            body["text"] = args.text
        return {**body, **kind}
    body.update(kind)
    template: dict[str, Any] = {"name": args.template}
    if args.language is not None:
        template["language"] = args.language
    if args.variable:  # Meta's wire format, passed through to the provider as campaigns build it
        template["components"] = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in args.variable]}]
    body["template"] = template
    return body


def cmd_send(args: argparse.Namespace, api: ApiClient) -> int:
    """Create one message; print its id and its send job's id."""
    headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key is not None else {}
    message_body(args)  # usage errors before anything is uploaded
    send_kinds.upload_files(args, api)  # a local file → the id of its upload
    message = api.call("POST", "/api/messages", json=message_body(args), headers=headers)
    print_result(message, args.json, lambda m: f"message {m['id']} {m['status']} ({m['priority']}), job {m['job_id']}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, api: ApiClient) -> int:
    """Send a failed message again (``POST /api/messages/{id}/retry``); print its state and its new job's id."""
    message = api.call("POST", f"/api/messages/{args.id}/retry")
    print_result(
        message,
        args.json,
        lambda m: f"message {m['id']} {m['status']} again ({len(m['history'])} earlier failure(s)), job {m['job_id']}",
    )
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``send`` and ``retry`` to the ``zapq`` subparsers."""
    p = sub.add_parser(
        "send", help="send one message (text, template, media, buttons, list, location, reaction); prints its ids"
    )
    p.add_argument("--company", type=int, required=True, metavar="ID")
    p.add_argument("--to", required=True, metavar="PHONE", help="recipient, country code first (e.g. +55 11 …)")
    content = p.add_mutually_exclusive_group(required=True)
    content.add_argument("--text", metavar="BODY", help="message text")
    content.add_argument("--template", metavar="NAME", help="an approved WhatsApp template")
    send_kinds.add_arguments(p, content)
    p.add_argument("--language", help="template language (the API's default: en_US)")
    p.add_argument("--variable", action="append", default=[], metavar="VALUE",
                   help="value of the template's next body parameter (repeat, in order)")  # fmt: skip
    p.add_argument("--priority", choices=tuple(TIER_QUEUES), help="send tier (the API's default: normal)")
    p.add_argument("--connection", type=int, metavar="ID", help="default: the company's first active connection")
    p.add_argument("--idempotency-key", metavar="KEY", help="a repeat with the same key creates nothing new")
    p.add_argument("--json", action="store_true", help="the created message as JSON")
    p.add_argument("--api-url", help=API_URL_HELP)
    p.set_defaults(func=with_api(cmd_send, ApiClient))

    p = sub.add_parser("retry", help="send a failed message again (fresh attempts; its failure kept in its history)")
    p.add_argument("id", type=int, metavar="MESSAGE_ID")
    p.add_argument("--json", action="store_true", help="the message as JSON")
    p.add_argument("--api-url", help=API_URL_HELP)
    p.set_defaults(func=with_api(cmd_retry, ApiClient))
