"""``zapq events …``: follow, page through and inspect the events zapq publishes for the CRMs.

* ``tail`` follows ``GET /api/events/stream`` (Server-Sent Events), one line per event (or one JSON line with
  ``--json``). When the connection drops after it was established, it reconnects with ``Last-Event-ID`` (the
  last event's cursor), so no event is missed or shown twice; Ctrl-C exits 0.
* ``list`` prints one page of the pull feed (``GET /api/events``) and the cursor to continue from.
* ``show`` prints one event with every delivery attempt of it (``GET /api/events/{id}``).

A thin client of the API: filters and cursors are checked there, and its refusals become exit codes in
:mod:`libs.cli.api`. Registered on the ``zapq`` parser by :func:`register`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from libs.cli.api import ApiCallError, ApiClient, ApiRefusedError, ApiUnreachableError, api_group
from libs.cli.output import EXIT_OK, TABLE_CELL_CHARS, print_result, table

#: The stream: the API sends a keep-alive comment every ``ZAPQ_EVENT_STREAM_PING_SECONDS`` (15 s by default);
#: nothing at all for this long means the connection is dead, and ``tail`` reconnects.
STREAM_TIMEOUT = httpx.Timeout(10.0, connect=3.0, read=90.0)
#: Waits between reconnection attempts of ``tail`` (seconds): doubling up to the last one.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
#: A long poll of ``list --wait`` answers within this many seconds (the API's maximum is 30).
LIST_TIMEOUT = httpx.Timeout(45.0, connect=3.0)
#: Characters of an event's summary in ``tail`` (``list`` keeps what its table shows of a value).
SUMMARY_CHARS = 80


class EventsApi(ApiClient):
    """The event routes of zapq's API."""

    def page(self, params: dict[str, Any]) -> dict[str, Any]:
        """``GET /api/events``: ``events``, ``next_cursor``, ``has_more``."""
        return dict(self.call("GET", "/api/events", params=params, timeout=LIST_TIMEOUT))

    def event(self, event_id: str) -> dict[str, Any]:
        """``GET /api/events/{id}``: the event and its ``deliveries``."""
        return dict(self.call("GET", f"/api/events/{event_id}"))


# -- Server-Sent Events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerEvent:
    """One dispatched SSE event: its ``id`` (the cursor), ``event`` (the type) and ``data``."""

    id: str | None
    event: str
    data: str


def parse_sse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The events of an SSE stream given as lines (WHATWG rules: ``field: value`` lines, blank line dispatches,
    ``:`` comments ignored, several ``data`` lines joined with newlines)."""
    event_id: str | None = None
    event_type = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(event_id, event_type or "message", "\n".join(data))
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            event_id = value


# -- rendering ------------------------------------------------------------------------------------------


def _clip(text: str, size: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def _message_received(d: dict[str, Any]) -> str:
    who = d["contact"].get("name") or d["contact"]["wa_id"]
    text = f' "{d["text"]}"' if d.get("text") else ""
    return f"message {d['message_id']} from {who}: {d['type']}{text}"


def _message_status(d: dict[str, Any]) -> str:
    error = d.get("error") or {}
    details = " ".join(str(v) for v in (error.get("code"), error.get("title")) if v is not None)
    failure = f" ({details})" if details else ""
    return f"message {d['message_id']} {d['previous_status']} → {d['status']}{failure}"


def _message_created(d: dict[str, Any]) -> str:
    what = (d.get("template") or {}).get("name") or d["type"]
    text = f' "{d["text"]}"' if d.get("text") else ""
    campaign = f" (campaign {d['campaign_id']})" if d.get("campaign_id") else ""
    return f"message {d['message_id']} to {d['contact']['wa_id']}: {what}{text}, {d['priority']}{campaign}"


def _campaign_status(d: dict[str, Any]) -> str:
    counters = d["counters"]
    return f"campaign {d['campaign_id']} {d['name']!r} {d['status']}: sent {counters['sent']}/{counters['recipients']}"


def _connection_status(d: dict[str, Any]) -> str:
    reason = f": {d['reason']}" if d.get("reason") else ""
    return f"connection {d['connection_id']} ({d['provider']}) {d['previous_status']} → {d['status']}{reason}"


#: Event type → one-line summary of its ``data``; other types show their data as compact JSON.
SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "message.received": _message_received,
    "message.status": _message_status,
    "message.created": _message_created,
    "campaign.status": _campaign_status,
    "connection.status": _connection_status,
}


def summary(event: dict[str, Any], size: int = SUMMARY_CHARS) -> str:
    """A short description of the event's ``data`` (at most ``size`` characters)."""
    data = event.get("data") or {}
    render = SUMMARIES.get(event.get("type", ""))
    if render is not None:
        try:
            return _clip(render(data), size)
        except (KeyError, TypeError, AttributeError):  # a field this version of the CLI does not know
            pass
    return _clip(json.dumps(data, separators=(",", ":"), default=str), size)


def _when(value: Any) -> str:
    """``occurred_at`` as ``2030-01-31T09:00:00Z`` (UTC, to the second)."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_line(event: dict[str, Any]) -> str:
    """``time  type  company N  conversation  summary``: one event of ``tail``."""
    return (
        f"{_when(event.get('occurred_at'))}  {event.get('type', ''):<17}  company {event.get('company_id')!s:<4}  "
        f"{event.get('conversation', ''):<24}  {summary(event)}"
    )


def render_event(event: dict[str, Any]) -> str:
    """An event with its data and, per endpoint, its delivery and attempts (newest first)."""
    lines = [
        f"event {event['id']}: {event['type']}",
        f"company {event['company_id']}  sequence {event['sequence']}  cursor {event['cursor']}",
        f"conversation {event['conversation']}  occurred {event['occurred_at']}",
        "data: " + json.dumps(event["data"], indent=2, default=str).replace("\n", "\n  "),
    ]
    deliveries = event.get("deliveries") or []
    if not deliveries:
        lines.append("deliveries: none (no endpoint of the company takes this type)")
    for delivery in deliveries:
        state = delivery["state"]
        if state == "delivered":
            state += f" at {delivery['delivered_at']}"
        elif delivery.get("next_attempt_at"):
            state += f", next attempt at {delivery['next_attempt_at']}"
        lines.append(f"endpoint {delivery['endpoint_id']}: {state} ({delivery['attempts']} attempt(s))")
        for attempt in delivery.get("log") or []:
            outcome = f"HTTP {attempt['status_code']}" if attempt.get("status_code") is not None else attempt["error"]
            excerpt = f"  {_clip(attempt['response_excerpt'], 60)}" if attempt.get("response_excerpt") else ""
            lines.append(
                f"  #{attempt['attempt']}  {attempt['attempted_at']}  {outcome}  {attempt['latency_ms']} ms{excerpt}"
            )
    return "\n".join(lines)


def render_page(page: dict[str, Any]) -> str:
    """The page's events as a table, then the cursor to continue from."""
    rows = [
        {
            "cursor": e["cursor"],
            "id": e["id"],
            "occurred_at": _when(e["occurred_at"]),
            "type": e["type"],
            "company": e["company_id"],
            "conversation": e["conversation"],
            "summary": summary(e, TABLE_CELL_CHARS),
        }
        for e in page["events"]
    ]
    more = " (more events waiting: run again with it)" if page["has_more"] else ""
    columns = ["cursor", "id", "occurred_at", "type", "company", "conversation", "summary"]
    return f"{table(rows, columns)}\nnext cursor: {page['next_cursor']}{more}"


# -- commands -------------------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.company is not None:
        params["company_id"] = args.company
    if args.types:
        params["types"] = args.types
    return params


def _decoded(sse: ServerEvent) -> dict[str, Any]:
    try:
        event = json.loads(sse.data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise ApiCallError(f"the stream sent an event that is not a JSON object: {sse.data[:100]!r}")
    return event


def _lost(exc: ApiCallError) -> bool:
    """Whether a failure of a stream that was up is worth reconnecting after: no answer, or a server error
    (an API restarting behind a proxy); a refusal (401, 400) would only repeat."""
    return isinstance(exc, ApiUnreachableError) or (isinstance(exc, ApiRefusedError) and exc.status >= 500)


def cmd_tail(args: argparse.Namespace, api: EventsApi) -> int:
    """Print events as they are published, until Ctrl-C, ``--count`` events, or the reader of a pipe stops.

    Once connected, a lost stream is resumed after the last event shown (``Last-Event-ID``), retrying with
    :data:`RECONNECT_DELAYS`; only the first connection's failure ends the command.
    """
    cursor: str | None = args.after
    shown = 0
    connected = lost = False
    delays: Iterator[float] = iter(RECONNECT_DELAYS)
    pause = threading.Event()  # never set: a sleep that Ctrl-C interrupts
    try:
        while True:
            headers = {"last-event-id": cursor} if cursor else {}
            try:
                with api.stream(
                    "GET", "/api/events/stream", params=_filters(args), headers=headers, timeout=STREAM_TIMEOUT
                ) as response:
                    where = f"after cursor {cursor}" if cursor else "from the next event"
                    verb = "reconnected; following" if connected else "following"
                    print(f"zapq: {verb} events {where} (Ctrl-C stops)", file=sys.stderr, flush=True)
                    connected, lost, delays = True, False, iter(RECONNECT_DELAYS)
                    for sse in parse_sse(response.iter_lines()):
                        event = _decoded(sse)
                        print(json.dumps(event, default=str) if args.json else event_line(event), flush=True)
                        cursor = sse.id or cursor
                        shown += 1
                        if args.count and shown >= args.count:
                            return EXIT_OK
                reason = "the API closed the stream"
            except ApiCallError as exc:
                if not connected or not _lost(exc):
                    raise
                reason = str(exc)
            if not lost:  # one line per outage
                print(f"zapq: {reason}; reconnecting", file=sys.stderr, flush=True)
                lost = True
            pause.wait(next(delays, RECONNECT_DELAYS[-1]))
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `zapq events tail | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_OK


def cmd_list(args: argparse.Namespace, api: EventsApi) -> int:
    """One page of the pull feed after ``--after``; prints the cursor to continue from."""
    params = _filters(args)
    if args.after is not None:
        params["after"] = args.after
    if args.limit is not None:
        params["limit"] = args.limit
    if args.wait is not None:
        params["wait"] = args.wait
    print_result(api.page(params), args.json, render_page)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, api: EventsApi) -> int:
    """One event with its deliveries and their attempts."""
    print_result(api.event(args.id), args.json, render_event)
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``events tail|list|show`` to the ``zapq`` subparsers."""
    command = api_group(
        sub,
        "events",
        summary="the events published for CRMs: follow, page, inspect deliveries",
        dest="events_command",
        client=EventsApi,
        with_json=False,  # each subcommand says what its --json prints
    )

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--company", type=int, metavar="ID", help="only this company's events")
        p.add_argument("--types", metavar="A,B", help="only these event types, e.g. message.received,message.status")
        p.add_argument("--after", metavar="CURSOR", help="start after this cursor (an event's or a page's)")

    p = command("tail", cmd_tail, "follow events as they are published, one line each (Ctrl-C stops)")
    filters(p)
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.add_argument("--json", action="store_true", help="each event as one JSON line")

    p = command("list", cmd_list, "one page of the feed, then the cursor to continue from")
    filters(p)
    p.add_argument("--limit", type=int, metavar="N", help="events per page (the API's default: 100)")
    p.add_argument("--wait", type=float, metavar="S", help="wait up to S seconds (≤ 30) for a first event")
    p.add_argument("--json", action="store_true", help="the page as JSON")

    p = command("show", cmd_show, "one event with its delivery attempts")
    p.add_argument("id", metavar="EVT_ID", help="evt_…")
    p.add_argument("--json", action="store_true", help="machine-readable output")
