"""``zapq campaign …``: create, import, start, pause, resume, cancel, watch and list campaigns.

A thin client of zapq's HTTP API (``/api/campaigns``), which owns the campaign state machine; nothing here
decides what a campaign may do. Registered on the ``zapq`` parser by :func:`register`. API failures become
exit codes in :mod:`libs.cli.api`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TextIO

import httpx

from libs.cli import send_kinds
from libs.cli.api import ApiClient, api_group
from libs.cli.output import EXIT_FAILED, EXIT_OK, UsageError, print_result, table

#: The upload: the server inserts while it reads, so a write may wait on it; the summary follows the last batch.
UPLOAD_TIMEOUT = httpx.Timeout(10.0, connect=3.0, write=60.0, read=120.0)
#: Bytes read from the CSV and sent per chunk.
CHUNK_BYTES = 64 * 1024
#: Seconds between two polls of ``status --watch``.
DEFAULT_WATCH_INTERVAL = 2.0
#: Seconds between two redraws of the upload progress bar on a terminal.
DRAW_EVERY = 0.1
#: Seconds of upload before a rows/s figure means something.
RATE_AFTER = 0.5
#: Statuses after which nothing changes any more (``--watch`` stops).
FINAL_STATUSES = frozenset({"completed", "cancelled"})
COUNTERS = ("recipients", "queued", "sent", "delivered", "read", "failed")
BAR_WIDTH = 30


class CampaignApi(ApiClient):
    """The campaign routes of zapq's API."""

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/campaigns`` → the draft campaign."""
        return dict(self.call("POST", "/api/campaigns", json=body))

    def get(self, campaign_id: int) -> dict[str, Any]:
        """``GET /api/campaigns/{id}`` → the campaign with its counters and ``progress`` (0 to 1)."""
        return dict(self.call("GET", f"/api/campaigns/{campaign_id}"))

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """``GET /api/campaigns?limit=N``: newest first."""
        return list(self.call("GET", "/api/campaigns", params={"limit": limit}))

    def upload(self, campaign_id: int, chunks: Iterable[bytes]) -> dict[str, Any]:
        """``POST /api/campaigns/{id}/recipients`` with a streamed ``text/csv`` body → the import summary."""
        path = f"/api/campaigns/{campaign_id}/recipients"
        headers = {"content-type": "text/csv"}
        return dict(self.call("POST", path, content=chunks, headers=headers, timeout=UPLOAD_TIMEOUT))

    def act(self, campaign_id: int, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/campaigns/{id}/{start|pause|resume|cancel}`` → the campaign in its new state."""
        return dict(self.call("POST", f"/api/campaigns/{campaign_id}/{action}", json=body))


# -- rendering ------------------------------------------------------------------------------------------


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########---------------------]`` for ``fraction`` in 0…1."""
    done = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * done + "-" * (width - done) + "]"


def _size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.1f} kB"


def render_status(campaign: dict[str, Any]) -> str:
    """Status line, counters, and the progress bar (progress = (sent + failed) / recipients, from the API)."""
    head = f"campaign {campaign['id']} {campaign['name']!r}: {campaign['status']}"
    if campaign["status"] == "scheduled" and campaign.get("start_at"):
        head += f" for {campaign['start_at']}"
    if campaign.get("status_reason") and campaign["status"] == "paused":  # why a rule or a quality flag paused it
        head += f" ({campaign['status_reason']})"
    counters = "  ".join(f"{name} {campaign[f'{name}_count']:,}" for name in COUNTERS)
    now = campaign.get("now") or {}
    states = "  ".join(f"{name} {count:,}" for name, count in now.items() if count)
    progress = float(campaign.get("progress") or 0.0)
    lines = [head, f"now: {states or 'no messages yet'}", f"totals: {counters}", f"{bar(progress)} {progress:6.1%}"]
    budget = campaign.get("budget")
    if budget:  # sends beyond the portfolio's messaging limit (libs.rules.budget)
        lines.append(f"{budget['state']}: {budget['waiting']:,} send(s), room from {budget['frees_at'] or 'now'}")
    return "\n".join(lines)


def render_import(result: dict[str, Any]) -> str:
    """The server's import summary and its first rejected rows."""
    lines = ["  ".join(f"{key} {result[key]:,}" for key in ("rows", "inserted", "duplicates", "rejected"))]
    lines += [f"  row {error['row']}: {error['reason']}" for error in result.get("errors", [])]
    if result["rejected"] > len(result.get("errors", [])):
        lines.append(f"  … and {result['rejected'] - len(result['errors']):,} more rejected rows")
    campaign = result["campaign"]
    lines.append(f"campaign {campaign['id']} now has {campaign['recipients_count']:,} recipients")
    return "\n".join(lines)


class UploadProgress:
    """Bytes sent of ``total`` (``None``: unknown) and an approximate rows/s (line breaks sent), on ``stream``.

    On a terminal one line is redrawn with ``\\r`` at most every :data:`DRAW_EVERY` seconds; otherwise a line
    is written at each quarter of a known size, and nothing when the size is unknown.
    """

    def __init__(self, stream: TextIO, total: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = total or None
        self.tty = stream.isatty()
        self.clock = clock
        self.started = clock()
        self.sent = self.rows = 0
        self._drawn_at = float("-inf")
        self._quarters = 0
        self._width = 0

    def advance(self, chunk: bytes) -> None:
        """Count ``chunk`` as sent; redraw when due."""
        self.sent += len(chunk)
        self.rows += chunk.count(b"\n")
        if self.tty:
            if self.clock() - self._drawn_at >= DRAW_EVERY:
                self._draw()
        elif self.total:
            crossed = False
            while self._quarters < 4 and self.sent >= self.total * (self._quarters + 1) / 4:
                self._quarters += 1
                crossed = True
            if crossed:  # one line, even when a chunk crosses several quarters
                self.stream.write(f"import: {self.line()}\n")
                self.stream.flush()

    def __enter__(self) -> UploadProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Draw the last state and end the terminal line."""
        if self.tty and self.sent:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        """``[####------]  42%  12.6 MB / 30.0 MB  ~85,000 rows/s`` (no bar or percentage without a size)."""
        elapsed = self.clock() - self.started
        rate = f"~{self.rows / elapsed:,.0f} rows/s" if elapsed >= RATE_AFTER else ""
        if self.total is None:
            return f"{_size(self.sent)}  {rate}".rstrip()
        fraction = self.sent / self.total
        return f"{bar(fraction)} {fraction:4.0%}  {_size(self.sent)} / {_size(self.total)}  {rate}".rstrip()

    def _draw(self) -> None:
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))  # pad over a longer previous line
        self.stream.flush()
        self._width = len(text)
        self._drawn_at = self.clock()


# -- commands -------------------------------------------------------------------------------------------


def _chunks(source: IO[bytes], progress: UploadProgress) -> Iterator[bytes]:
    while chunk := source.read(CHUNK_BYTES):
        progress.advance(chunk)
        yield chunk


@contextlib.contextmanager
def _csv_source(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The file (closed after) and its size, or stdin (left open) without a size for ``-``."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below, after the size is read
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        yield handle, os.fstat(handle.fileno()).st_size


def cmd_create(args: argparse.Namespace, api: CampaignApi) -> int:
    """Create a draft campaign; print its id."""
    body: dict[str, Any] = {"company_id": args.company, "connection_id": args.connection, "name": args.name}
    if args.text is None and args.template is None and args.media is None:
        raise UsageError("give --text, --template or --media")
    if args.media is not None:
        kind, sep, ref = args.media.partition("=")
        if not sep or kind not in send_kinds.MEDIA or not ref:
            raise UsageError(f"--media is KIND=URL|MEDIA_ID, KIND one of {', '.join(send_kinds.MEDIA)}")
        if args.template is not None:
            raise UsageError("--media goes with --text (its caption), not --template")
        body[kind] = send_kinds.media_ref(ref) | ({"filename": args.filename} if args.filename else {})
    elif args.filename is not None:
        raise UsageError("--filename goes with --media document=…")
    if args.text is not None or args.media is not None:
        if args.language is not None or args.variable:
            raise UsageError("--language and --variable go with --template")
        if args.text is not None:
            body["text"] = args.text
    else:
        template: dict[str, Any] = {"name": args.template, "variables": args.variable}
        if args.language is not None:
            template["language"] = args.language
        body["template"] = template
    campaign = api.create(body)
    print_result(campaign, args.json, lambda c: str(c["id"]))
    return EXIT_OK


def cmd_import(args: argparse.Namespace, api: CampaignApi) -> int:
    """Stream a CSV (``phone`` column + variables) into a campaign; print the server's summary."""
    api.get(args.id)  # an unknown id, a bad token or a dead API fail before a large file is read
    try:
        with _csv_source(args.file) as (source, size), UploadProgress(sys.stderr, size) as progress:
            result = api.upload(args.id, _chunks(source, progress))
    except KeyboardInterrupt:
        hint = f"see `zapq campaign status {args.id}`"
        print(f"zapq: interrupted; the server imports all rows or none: {hint}", file=sys.stderr)
        return EXIT_FAILED
    print_result(result, args.json, render_import)
    return EXIT_OK


def cmd_start(args: argparse.Namespace, api: CampaignApi) -> int:
    """Start now, or schedule for ``--at`` (ISO time; the API reads one without an offset as UTC)."""
    return _show_new_status(args, api.act(args.id, "start", {"start_at": args.at} if args.at else None))


def cmd_transition(args: argparse.Namespace, api: CampaignApi) -> int:
    """``pause``, ``resume`` or ``cancel``."""
    return _show_new_status(args, api.act(args.id, args.action))


def _show_new_status(args: argparse.Namespace, campaign: dict[str, Any]) -> int:
    def render(c: dict[str, Any]) -> str:
        when = f" for {c['start_at']}" if c["status"] == "scheduled" else ""
        warnings = [f"\nwarning: {w['message']}" for w in c.get("warnings") or []]  # e.g. tier budget exceeded
        return f"campaign {c['id']}: {c['status']}{when}" + "".join(warnings)

    print_result(campaign, args.json, render)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, api: CampaignApi) -> int:
    """Print a campaign once, or (``--watch``) until it is completed or cancelled, or Ctrl-C."""
    if not args.watch:
        print_result(api.get(args.id), args.json, render_status)
        return EXIT_OK
    tty = sys.stdout.isatty() and not args.json
    stop = threading.Event()
    previous_lines = 0
    try:
        while True:
            campaign = api.get(args.id)
            if args.json:
                screen = json.dumps(campaign, default=str)
            else:
                screen = render_status(campaign)
                if tty:
                    screen += f"\n{time.strftime('%H:%M:%S')}, every {args.interval:g} s (Ctrl-C quits)"
                else:
                    screen = screen.replace("\n", "  ")
            if tty and previous_lines:
                sys.stdout.write(f"\x1b[{previous_lines}A\x1b[J")  # back to the previous screen's first line
            sys.stdout.write(screen + "\n")
            sys.stdout.flush()
            previous_lines = screen.count("\n") + 1
            if campaign["status"] in FINAL_STATUSES:
                return EXIT_OK
            stop.wait(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_list(args: argparse.Namespace, api: CampaignApi) -> int:
    """Newest campaigns first, with progress."""
    rows = api.recent(args.limit)
    columns = ["id", "name", "status", "recipients_count", "sent_count", "failed_count", "progress"]
    print_result(rows, args.json, lambda rs: table([{**r, "progress": f"{r['progress']:.1%}"} for r in rs], columns))
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def register(sub: Any) -> None:
    """Add ``campaign create|import|start|pause|resume|cancel|status|list`` to the ``zapq`` subparsers."""
    command = api_group(
        sub,
        "campaign",
        summary="campaigns through the API: create, import, start, watch",
        dest="campaign_command",
        client=CampaignApi,
    )

    p = command("create", cmd_create, "create a draft campaign; prints its id")
    p.add_argument("--company", type=int, required=True, metavar="ID")
    p.add_argument("--connection", type=int, required=True, metavar="ID")
    p.add_argument("--name", required=True)
    content = p.add_mutually_exclusive_group()
    content.add_argument("--text", metavar="BODY", help="message text (or a --media caption); {column} placeholders "
                         "come from the CSV")  # fmt: skip
    content.add_argument("--template", metavar="NAME", help="an approved WhatsApp template")
    p.add_argument("--media", metavar="KIND=URL|MEDIA_ID", help="send one medium: image, video, audio, document or "
                   "sticker (e.g. image=https://x.io/a.jpg); --text is its caption")  # fmt: skip
    p.add_argument("--filename", help="file name the recipients see (--media document=…)")
    p.add_argument("--language", help="template language (the API's default: en_US)")
    p.add_argument("--variable", action="append", default=[], metavar="COLUMN",
                   help="CSV column filling the template's next body parameter (repeat, in order)")  # fmt: skip

    p = command("import", cmd_import, "stream recipients from a CSV with a 'phone' column ('-': stdin)")
    p.add_argument("id", type=int)
    p.add_argument("file", metavar="FILE.csv")

    p = command("start", cmd_start, "start now, or schedule with --at")
    p.add_argument("id", type=int)
    p.add_argument("--at", metavar="ISO_TIME", help="e.g. 2030-01-31T09:00:00+00:00 (no offset: UTC)")

    for action, summary in (("pause", "running → paused"), ("resume", "paused → running"), ("cancel", "stop for good")):
        p = command(action, cmd_transition, summary)
        p.add_argument("id", type=int)
        p.set_defaults(action=action)

    p = command("status", cmd_status, "status, counters and progress")
    p.add_argument("id", type=int)
    p.add_argument("--watch", action="store_true", help="redraw until completed or cancelled (Ctrl-C quits)")
    p.add_argument("--interval", type=_positive, default=DEFAULT_WATCH_INTERVAL, metavar="S",
                   help="seconds between polls with --watch")  # fmt: skip

    p = command("list", cmd_list, "newest campaigns first")
    p.add_argument("--limit", type=int, default=20, help="1 to 500")
