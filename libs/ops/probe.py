"""Container liveness/readiness probes for workers and the scheduler (no Redis, no Postgres).

Every Dramatiq worker process rewrites ``<dir>/zapq-worker-<pid>.alive`` (``<dir>``: its stack's,
``ZAPQ_HEARTBEAT_DIR``/``ZAPQ_REDIS_NAMESPACE``) every few seconds with its state:
empty while it is healthy, else what is wrong — a thread of it died, or it holds jobs yet has finished none
for longer than its stall limit (:class:`libs.middleware.liveness.Liveness`); the periodiq process writes
``zapq-scheduler-<pid>.alive`` (written by :mod:`libs.heartbeat`). ``python -m libs.ops.probe
worker|scheduler [--max-age S]`` exits 0 when at least one such file exists and every file of a running process
is fresher than ``max-age`` and reports no problem. A probe never contacts Redis or Postgres itself; a worker
stuck behind an outage longer than its stall limit does fail it (Kubernetes then restarts it), and passes again
as soon as it makes progress.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from libs.heartbeat import heartbeat_file, heartbeat_files, pid_of, process_running, touch

__all__ = ["DEFAULT_MAX_AGE", "KINDS", "check", "heartbeat_file", "main", "touch"]

KINDS = ("worker", "scheduler")
DEFAULT_MAX_AGE = {"worker": 30.0, "scheduler": 120.0}


def check(directory: str, kind: str, max_age: float, *, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) for the processes of ``kind`` that keep heartbeats in ``directory``."""
    now = time.time() if now is None else now
    files = heartbeat_files(directory, kind)
    live = []
    for path in files:
        pid = pid_of(path)
        if process_running(pid):
            try:
                live.append((pid, now - path.stat().st_mtime, path.read_text(errors="replace").strip()))
            except FileNotFoundError:  # the process ended (or is replacing it) just now
                continue
    if not live:
        return False, f"no running {kind} process has a heartbeat in {directory}"
    stale = [f"pid {pid} silent for {age:.0f} s" for pid, age, _ in live if age > max_age]
    if stale:
        return False, f"{kind} heartbeat older than {max_age:.0f} s: " + ", ".join(stale)
    unwell = [f"pid {pid} {problem}" for pid, _, problem in live if problem]
    if unwell:
        return False, f"{kind} not making progress: " + "; ".join(unwell)
    return True, f"{len(live)} {kind} process(es) alive"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m libs.ops.probe worker|scheduler [--max-age S]``: 0 healthy, 1 not."""
    from libs.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m libs.ops.probe", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--max-age", type=float, default=None, help="seconds a heartbeat stays fresh")
    args = parser.parse_args(argv)
    settings = load_settings()
    healthy, reason = check(settings.stack_heartbeat_dir, args.kind, args.max_age or DEFAULT_MAX_AGE[args.kind])
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
