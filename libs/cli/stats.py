"""``zapq stats``, ``zapq job ID`` and ``zapq top``: queue stats and job lookup from the command line.

Registered on the ``zapq`` parser by :func:`register`; the numbers come from
:mod:`libs.ops.stats` (the same reads as the API's ``/api/queues`` and ``/api/jobs/{id}``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
from typing import Any

from libs.cli.output import EXIT_NOT_FOUND, EXIT_OK
from libs.settings import Settings

#: Seconds between two screens of ``zapq top``.
DEFAULT_TOP_INTERVAL = 2.0

#: The table's columns; the figures are :class:`libs.ops.stats.QueueStats`'s, as the API and the dashboard show
#: them (``done`` / ``failed``: the last full minute; ``rate/s``: over the last ``rate_window_s`` seconds).
COLUMNS = ("queue", "waiting", "delayed", "in_flight", "dead", "done/last min", "failed/last min", "rate/s",
           "p95_ms", "oldest_s")  # fmt: skip


def _resources(settings: Settings) -> tuple[Any, Any]:
    from libs.db.engine import Database
    from libs.redis_clients import redis_client

    return redis_client(settings), Database.from_url(settings.sqlalchemy_url, pool_size=1)


def _row(stats: Any) -> dict[str, Any]:
    return {
        "queue": stats.queue,
        "waiting": stats.waiting,
        "delayed": stats.delayed,
        "in_flight": stats.in_flight,
        "dead": stats.dead,
        "done/last min": stats.done_last_minute,
        "failed/last min": stats.failed_last_minute,
        "rate/s": stats.rate_per_second,
        "_rate_window_s": stats.rate_window_s,
        "p95_ms": stats.p95_ms,
        "oldest_s": round(stats.oldest_waiting_seconds) if stats.oldest_waiting_seconds is not None else None,
    }


def render_stats(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of queue rows (names left-aligned, numbers right-aligned)."""
    header = [c.upper() for c in COLUMNS]
    cells = [[("" if row[c] is None else str(row[c])) for c in COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    window = rows[0].get("_rate_window_s", 300) if rows else 300
    legend = f"done/failed: in the last full minute; rate/s: over the last {window} s"
    return "\n".join([line(header), *(line(r) for r in cells), legend])


def _read(settings: Settings, client: Any, db: Any) -> list[Any]:
    from libs.ops.stats import queue_stats

    return queue_stats(client, settings.redis_namespace, db)


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Print every queue's numbers once."""
    import json

    from libs.messages.store import rule_failures_sync

    client, db = _resources(settings)
    try:
        stats = _read(settings, client, db)
        with db.session() as session:
            rules = rule_failures_sync(session)
    finally:
        db.close()
    if args.json:  # one object per queue, as always (the rule failures are in /metrics: zapq_rule_failures)
        print(json.dumps([s.to_dict() for s in stats], indent=2))
    else:
        print(render_stats([_row(s) for s in stats]))
        kept = next((s.unmatched for s in stats if s.unmatched is not None), None)
        if kept is not None:
            print(f"\nwebhooks unmatched (kept for numbers without a connection): {kept}")
        if rules:
            print("\nmessages failed by a WhatsApp rule in the last 24 h (not dead-lettered):")
            print("\n".join(f"  {reason}: {count}" for reason, count in sorted(rules.items())))
    return EXIT_OK


def _message_job(db: Any, message_id: int) -> tuple[dict[str, Any] | None, str | None]:
    """Message ``message_id`` (or ``None``) and its send job's id (``None`` when it has no fixed one)."""
    from libs.messages import actions, store

    with db.session() as session:
        row = store.get_sync(session, message_id)
    return row, (actions.job_id(row) if row is not None else None)


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    """Print where one job is (exit 3 when unknown). A number is a message id: its send job is shown, and the
    output says so."""
    import json

    from libs.ops.stats import job_lookup

    client, db = _resources(settings)
    found: dict[str, Any] = {"found": "job", "job_id": args.id}
    try:
        if args.id.isdigit():  # job ids are UUIDs: a number is a message id
            row, job_id = _message_job(db, int(args.id))
            if row is None:
                print(f"zapq: {args.id} is neither a job id nor a message id", file=sys.stderr)
                return EXIT_NOT_FOUND
            found = {"found": "message", "message_id": row["id"], "message_status": row["status"], "job_id": job_id}
            if job_id is None:
                why = "an inbound message" if row["direction"] == "in" else "a campaign send (no fixed job id)"
                found["note"] = f"{why}; see zapq message {row['id']}"
                print(json.dumps(found, indent=2) if args.json else _say_found(found))
                return EXIT_OK
        info = job_lookup(client, settings.redis_namespace, found["job_id"], db)
    finally:
        db.close()
    if info.state is None:
        if found["found"] == "message":
            found["note"] = "its job record expired (kept 24 h)"
            print(json.dumps(found, indent=2) if args.json else _say_found(found))
            return EXIT_OK
        print(f"zapq: no job {args.id} (unknown, or its record expired after 24 h)", file=sys.stderr)
        return EXIT_NOT_FOUND
    data = {**found, **{k: v for k, v in info.to_dict().items() if k != "message_id"}}  # its message_id: job_id
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(f"{key}: {value}" for key, value in data.items() if value not in (None, 0, "")))
    return EXIT_OK


def _say_found(found: dict[str, Any]) -> str:
    return "\n".join(f"{key}: {value}" for key, value in found.items() if value is not None)


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    """Refresh the stats table every ``--interval`` seconds until Ctrl-C (``--once``: print one screen)."""
    client, db = _resources(settings)
    stop = threading.Event()
    try:
        while True:
            screen = render_stats([_row(s) for s in _read(settings, client, db)])
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            if args.once:
                print(f"zapq top — {stamp}\n{screen}")
                return EXIT_OK
            sys.stdout.write(f"\x1b[H\x1b[2J zapq top — {stamp} (Ctrl-C to quit)\n{screen}\n")
            sys.stdout.flush()
            stop.wait(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        db.close()


def register(sub: Any) -> None:
    """Add ``stats``, ``job`` and ``top`` to the ``zapq`` subparsers."""
    p = sub.add_parser("stats", help="every queue: waiting, delayed, in flight, dead, rates, p95")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("job", help="where a job is: state, position, ETA, worker, duration, error")
    p.add_argument("id", help="a job id (the Dramatiq message id) or a message id (its send job is shown)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("top", help="live queue stats until Ctrl-C")
    p.add_argument("--once", action="store_true", help="print one screen and exit")
    p.add_argument("--interval", type=float, default=DEFAULT_TOP_INTERVAL, help="seconds between screens")
    p.set_defaults(func=cmd_top)
