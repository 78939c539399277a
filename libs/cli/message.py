"""``zapq message ID``: one message through the API — its state, timeline, send job, provider id and errors.

The timeline is the message's own timestamps in order (created → queued → sending → sent → delivered → read,
or failed), then its earlier failures (``history``: a retried or replayed message keeps them). The send job
is looked up too (``/api/jobs/{id}``) while its record lasts (24 h).
"""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.api import API_URL_HELP, ApiClient, ApiRefusedError, with_api
from libs.cli.output import EXIT_OK, print_result
from libs.messages import kinds

#: The timestamps of a message, in the order of its life.
STAGES = ("created", "queued", "sending", "sent", "delivered", "read", "failed")


def timeline(message: dict[str, Any]) -> list[tuple[str, str]]:
    """``(stage, ISO time)`` of every stage the message reached, in the order of its life."""
    return [(stage, str(message[f"{stage}_at"])) for stage in STAGES if message.get(f"{stage}_at")]


def job_of(api: ApiClient, job_id: str | None) -> dict[str, Any] | None:
    """The send job's record, or ``None`` (no fixed job id, or its record expired)."""
    if job_id is None:
        return None
    try:
        job: dict[str, Any] = api.call("GET", f"/api/jobs/{job_id}")
    except ApiRefusedError as exc:
        if exc.status == 404:
            return None
        raise
    return job


def render(data: dict[str, Any]) -> str:
    """The human view of ``data`` (a message with ``timeline`` and ``job``)."""
    m = data
    contact = m.get("contact") or m.get("recipient")
    lines = [
        f"message {m['id']}: {m['status']} ({m['direction']}, {m['type']}), company {m['company_id']}, "
        f"connection {m['connection_id']}" + (f", campaign {m['campaign_id']}" if m.get("campaign_id") else ""),
        f"contact: {contact}",
        f"provider id: {m.get('external_id') or '-'}",
        *([f"media: {media}"] if (media := kinds.media_line(m["type"], m.get("payload"))) else []),
        f"job: {m.get('job_id') or '- (campaign and inbound messages have no fixed job id)'}",
        f"attempts: {m.get('attempts', 0)}",
    ]
    if m.get("error_code") or m.get("error_title"):
        lines.append(f"error: {m.get('error_title') or ''} ({m.get('error_code') or '-'})")
    lines.append("timeline:")
    lines += [f"  {at}  {stage}" for stage, at in data["timeline"]]
    for earlier in m.get("history") or []:
        lines.append(f"  earlier failure: {earlier}")
    job = data.get("job")
    if job is not None:
        shown = {k: v for k, v in job.items() if v not in (None, 0, "", [], {})}
        lines.append("job record: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines)


def cmd_message(args: argparse.Namespace, api: ApiClient) -> int:
    """Print one message (exit 3 when it does not exist)."""
    message = api.call("GET", f"/api/messages/{args.id}")
    data = {**message, "timeline": timeline(message), "job": job_of(api, message.get("job_id"))}
    print_result(data, args.json, render)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``message ID``."""
    p = sub.add_parser("message", help="one message: state, timeline, job id, provider id, errors")
    p.add_argument("id", type=int, metavar="MESSAGE_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--api-url", help=API_URL_HELP)
    p.set_defaults(func=with_api(cmd_message, ApiClient))
