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

COLUMNS = ("queue", "waiting", "delayed", "in_flight", "dead", "done/min", "failed/min", "rate/s", "p95_ms", "oldest_s")


def _resources(settings: Settings) -> tuple[Any, Any]:
    from libs.broker import redis_client
    from libs.db.engine import Database

    return redis_client(settings), Database.from_url(settings.sqlalchemy_url, pool_size=1)


def _row(stats: Any) -> dict[str, Any]:
    last = -2 if len(stats.completed_per_minute) > 1 else -1  # the last full minute
    return {
        "queue": stats.queue,
        "waiting": stats.waiting,
        "delayed": stats.delayed,
        "in_flight": stats.in_flight,
        "dead": stats.dead,
        "done/min": stats.completed_per_minute[last] if stats.completed_per_minute else 0,
        "failed/min": stats.failed_per_minute[last] if stats.failed_per_minute else 0,
        "rate/s": stats.rate_per_second,
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

    return "\n".join([line(header), *(line(r) for r in cells)])


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


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    """Print where one job is (exit 3 when unknown)."""
    import json

    from libs.ops.stats import job_lookup

    client, db = _resources(settings)
    try:
        info = job_lookup(client, settings.redis_namespace, args.id, db)
    finally:
        db.close()
    if info.state is None:
        print(f"zapq: no job {args.id} (unknown, or its record expired after 24 h)", file=sys.stderr)
        return EXIT_NOT_FOUND
    data = info.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(f"{key}: {value}" for key, value in data.items() if value not in (None, 0, "")))
    return EXIT_OK


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
    p.add_argument("id", help="the Dramatiq message id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("top", help="live queue stats until Ctrl-C")
    p.add_argument("--once", action="store_true", help="print one screen and exit")
    p.add_argument("--interval", type=float, default=DEFAULT_TOP_INTERVAL, help="seconds between screens")
    p.set_defaults(func=cmd_top)
