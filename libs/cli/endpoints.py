"""``zapq endpoints …``: the webhook endpoints events are delivered to — list, add, remove, test, enable,
disable, rotate the secret, replay.

A thin client of ``/api/webhook-endpoints``, which checks URLs, event types and limits and owns the delivery
state; its refusals become exit codes in :mod:`libs.cli.api`. Registered on the ``zapq`` parser by
:func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_FAILED, EXIT_OK, UsageError, print_result, table
from libs.timeparse import parse_since

BASE = "/api/webhook-endpoints"


class EndpointsApi(ApiClient):
    """The webhook-endpoint routes of zapq's API."""

    def list(self, company_id: int | None) -> list[dict[str, Any]]:
        """``GET /api/webhook-endpoints[?company_id=N]``, with backlog, success rate and last failure."""
        params = {"company_id": company_id} if company_id is not None else {}
        return list(self.call("GET", BASE, params=params))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/webhook-endpoints`` → the endpoint and its ``secret`` (shown this once)."""
        return dict(self.call("POST", BASE, json=body))

    def update(self, endpoint_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /api/webhook-endpoints/{id}``."""
        return dict(self.call("PATCH", f"{BASE}/{endpoint_id}", json=changes))

    def delete(self, endpoint_id: int) -> None:
        """``DELETE /api/webhook-endpoints/{id}`` (its deliveries go with it)."""
        self.call("DELETE", f"{BASE}/{endpoint_id}")

    def act(self, endpoint_id: int, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/webhook-endpoints/{id}/{rotate-secret|test|replay}``."""
        return dict(self.call("POST", f"{BASE}/{endpoint_id}/{action}", json=body))


# -- rendering ------------------------------------------------------------------------------------------


def _state(endpoint: dict[str, Any]) -> str:
    if endpoint["enabled"]:
        return "enabled"
    return f"disabled: {endpoint['disabled_reason']}" if endpoint.get("disabled_reason") else "disabled"


def _success(endpoint: dict[str, Any]) -> str:
    rate = endpoint.get("success_rate_24h")
    return "-" if rate is None else f"{rate:.1%} of {endpoint['attempts_24h']}"


def _last_failure(endpoint: dict[str, Any]) -> str:
    if not endpoint.get("last_failure_at"):
        return "-"
    return f"{endpoint['last_failure_at']} {endpoint.get('last_failure_reason') or ''}".strip()


def render_list(endpoints: list[dict[str, Any]]) -> str:
    """The endpoints with their state, backlog, success rate (last 24 h) and last failure."""
    rows = [
        {
            "id": e["id"],
            "company": e["company_id"],
            "url": e["url"],
            "types": ",".join(e["event_types"]) or "all",
            "state": _state(e),
            "backlog": e["backlog"],
            "failed": e["failed_deliveries"],
            "success_24h": _success(e),
            "last_failure": _last_failure(e),
        }
        for e in endpoints
    ]
    columns = ["id", "company", "url", "types", "state", "backlog", "failed", "success_24h", "last_failure"]
    return table(rows, columns)


def _secret_lines(endpoint: dict[str, Any]) -> list[str]:
    return [f"secret {endpoint['secret']}", "(shown this once: store it where your receiver reads it)"]


# -- commands -------------------------------------------------------------------------------------------


def _types(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def cmd_list(args: argparse.Namespace, api: EndpointsApi) -> int:
    """Every endpoint (of one company) with its delivery figures."""
    print_result(api.list(args.company), args.json, render_list)
    return EXIT_OK


def cmd_add(args: argparse.Namespace, api: EndpointsApi) -> int:
    """Create an endpoint; print its id and its secret (the only time it is shown)."""
    body: dict[str, Any] = {"company_id": args.company, "url": args.url, "event_types": _types(args.types)}
    if args.description is not None:
        body["description"] = args.description
    if args.rate is not None:
        body["rate_per_second"] = args.rate
    if args.in_flight is not None:
        body["max_in_flight"] = args.in_flight
    endpoint = api.create(body)
    print_result(endpoint, args.json, lambda e: "\n".join([f"endpoint {e['id']} {e['url']}", *_secret_lines(e)]))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, api: EndpointsApi) -> int:
    """Remove an endpoint and its delivery log."""
    api.delete(args.id)
    print_result({"id": args.id, "deleted": True}, args.json, lambda d: f"endpoint {args.id} removed")
    return EXIT_OK


def cmd_test(args: argparse.Namespace, api: EndpointsApi) -> int:
    """Send a signed ``ping`` now; exit 1 when the endpoint does not answer 2xx."""
    result = api.act(args.id, "test")

    def render(r: dict[str, Any]) -> str:
        outcome = f"HTTP {r['status_code']}" if r.get("status_code") is not None else r.get("error")
        verdict = "ok" if r["ok"] else "FAILED"
        body = f"\n{r['response']}" if r.get("response") else ""
        return f"ping {r['webhook_id']} to endpoint {args.id}: {verdict}, {outcome} in {r['latency_ms']} ms{body}"

    print_result(result, args.json, render)
    return EXIT_OK if result["ok"] else EXIT_FAILED


def cmd_enable(args: argparse.Namespace, api: EndpointsApi) -> int:
    """``enable`` (its waiting deliveries resume) or ``disable``."""
    endpoint = api.update(args.id, {"enabled": args.action == "enable"})
    print_result(endpoint, args.json, lambda e: f"endpoint {e['id']} {_state(e)}")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace, api: EndpointsApi) -> int:
    """A new secret (printed once); the previous one keeps signing beside it for a day."""
    endpoint = api.act(args.id, "rotate-secret")

    def render(e: dict[str, Any]) -> str:
        grace = f"the previous secret keeps signing too until {e['previous_secret_expires_at']}"
        return "\n".join([f"endpoint {e['id']}: new secret", *_secret_lines(e), grace])

    print_result(endpoint, args.json, render)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, api: EndpointsApi) -> int:
    """Deliver one event again, or every event since a time (``--only-failed``: the failed ones)."""
    if args.event is not None:
        if args.only_failed:
            raise UsageError("--only-failed goes with --since")
        body: dict[str, Any] = {"event_id": args.event}
    else:
        body = {"since": parse_since(args.since).isoformat(), "only_failed": args.only_failed}
    result = api.act(args.id, "replay", body)
    print_result(result, args.json, lambda r: f"queued {r['queued']} deliveries to endpoint {args.id}")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def register(sub: Any) -> None:
    """Add ``endpoints list|add|rm|test|enable|disable|rotate-secret|replay`` to the ``zapq`` subparsers."""
    command = api_group(
        sub,
        "endpoints",
        summary="webhook endpoints events are delivered to (Standard Webhooks)",
        dest="endpoints_command",
        client=EndpointsApi,
    )

    p = command("list", cmd_list, "endpoints with backlog, success rate (24 h) and last failure")
    p.add_argument("--company", type=int, metavar="ID", help="only this company's endpoints")

    p = command("add", cmd_add, "create an endpoint; prints its id and its secret (shown once)")
    p.add_argument("--company", type=int, required=True, metavar="ID")
    p.add_argument("--url", required=True, help="https:// (http:// too outside prod)")
    p.add_argument("--types", metavar="A,B", help="event types it takes (default: every type)")
    p.add_argument("--description")
    p.add_argument("--rate", type=_positive, metavar="N", help="deliveries started per second (API default: 200)")
    p.add_argument("--in-flight", type=_positive, metavar="N", help="deliveries in flight at once (API default: 64)")

    for name, func, summary in (
        ("rm", cmd_rm, "remove an endpoint and its delivery log"),
        ("test", cmd_test, "send a signed ping now (exit 1 unless it answers 2xx)"),
        ("rotate-secret", cmd_rotate, "a new secret, printed once; the old one signs too for 24 h"),
    ):
        command(name, func, summary).add_argument("id", type=int)
    for action, summary in (
        ("enable", "resume its open deliveries"),
        ("disable", "stop delivering (events published meanwhile reach it only by replay --since)"),
    ):
        p = command(action, cmd_enable, summary)
        p.add_argument("id", type=int)
        p.set_defaults(action=action)

    p = command("replay", cmd_replay, "deliver one event again, or every event since a time")
    p.add_argument("id", type=int)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--event", metavar="EVT_ID", help="one event (evt_…)")
    what.add_argument("--since", metavar="2h|ISO", help="every event that occurred since then (a duration ago)")
    p.add_argument("--only-failed", action="store_true", help="with --since: only failed (and never sent) ones")
