"""Container liveness/readiness probes for workers and the scheduler (no Redis, no Postgres).

Every Dramatiq worker process rewrites ``<dir>/zapq-worker-<pid>.alive`` every few seconds with its state:
empty while it is healthy, else what is wrong — a thread of it died, or it holds jobs yet has finished none
for longer than its stall limit (:class:`libs.middleware.liveness.Liveness`); the periodiq process writes
``zapq-scheduler-<pid>.alive``. ``python -m libs.ops.probe worker|scheduler [--max-age S]`` exits 0 when at
least one such file exists and every file of a running process is fresher than ``max-age`` and reports no
problem. A probe never contacts Redis or Postgres itself; a worker stuck behind an outage longer than its
stall limit does fail it (Kubernetes then restarts it), and passes again as soon as it makes progress.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

KINDS = ("worker", "scheduler")
DEFAULT_MAX_AGE = {"worker": 30.0, "scheduler": 120.0}


def heartbeat_file(directory: str, kind: str, pid: int | None = None) -> Path:
    """Where process ``pid`` (default: this one) of ``kind`` keeps its heartbeat."""
    return Path(directory) / f"zapq-{kind}-{pid or os.getpid()}.alive"


def touch(directory: str, kind: str, problem: str | None = None) -> None:
    """Record that this process is alive now: healthy, or with ``problem`` (written atomically)."""
    path = heartbeat_file(directory, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{threading.get_ident()}")
    scratch.write_text(problem or "")
    os.replace(scratch, path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody reaped yet (a zombie) still answers kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def check(directory: str, kind: str, max_age: float, *, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) for the processes of ``kind`` that keep heartbeats in ``directory``."""
    now = time.time() if now is None else now
    files = sorted(Path(directory).glob(f"zapq-{kind}-*.alive"))
    live = []
    for path in files:
        pid = int(path.stem.rsplit("-", 1)[-1].split(".")[0])
        if _running(pid):
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


def start_heartbeat(
    directory: str, kind: str, *, interval: float = 5.0, problem: Callable[[], str | None] = lambda: None
) -> threading.Thread:
    """A daemon thread writing this process's heartbeat every ``interval`` s with what ``problem()`` reports
    (``None``: healthy)."""

    def beat() -> None:
        while True:
            try:
                touch(directory, kind, problem())
            except Exception:  # a full disk or a bug in problem(): the file goes stale and the probe says so
                logger.warning("could not write the %s heartbeat", kind, exc_info=True)
            time.sleep(interval)

    thread = threading.Thread(target=beat, name=f"zapq-{kind}-heartbeat", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m libs.ops.probe worker|scheduler [--max-age S]``: 0 healthy, 1 not."""
    from libs.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m libs.ops.probe", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--max-age", type=float, default=None, help="seconds a heartbeat stays fresh")
    args = parser.parse_args(argv)
    settings = load_settings()
    healthy, reason = check(settings.heartbeat_dir, args.kind, args.max_age or DEFAULT_MAX_AGE[args.kind])
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
