"""Heartbeat files: how a worker or scheduler process proves to its container probe that it is alive.

Every such process rewrites ``<dir>/zapq-<kind>-<pid>.alive`` every few seconds: empty while it is healthy, else
what is wrong (:class:`libs.middleware.liveness.Liveness` for workers). ``python -m libs.ops.probe`` reads them.
``<dir>`` is one stack's (:attr:`libs.settings.Settings.stack_heartbeat_dir`: one per Redis namespace). A process
removes its own file when it stops (:func:`remove`); :func:`prune` removes those of processes that are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)


def heartbeat_file(directory: str, kind: str, pid: int | None = None) -> Path:
    """Where process ``pid`` (default: this one) of ``kind`` keeps its heartbeat."""
    return Path(directory) / f"zapq-{kind}-{pid or os.getpid()}.alive"


def heartbeat_files(directory: str, kind: str) -> list[Path]:
    """Every heartbeat file of ``kind`` in ``directory``, sorted."""
    return sorted(Path(directory).glob(f"zapq-{kind}-*.alive"))


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
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


def pid_of(path: Path) -> int:
    """The process id in a heartbeat file's name."""
    return int(path.stem.rsplit("-", 1)[-1].split(".")[0])


def remove(directory: str, kind: str, pid: int | None = None) -> None:
    """Remove the heartbeat of process ``pid`` (default: this one), if any: it stopped."""
    with contextlib.suppress(FileNotFoundError):
        heartbeat_file(directory, kind, pid).unlink()


def prune(directory: str) -> list[Path]:
    """Remove every heartbeat in ``directory`` whose process is gone; the removed paths."""
    removed = []
    for path in sorted(Path(directory).glob("zapq-*-*.alive")):
        try:
            pid = pid_of(path)
        except ValueError:
            continue
        if not process_running(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


def touch(directory: str, kind: str, problem: str | None = None) -> None:
    """Record that this process is alive now: healthy, or with ``problem`` (written atomically)."""
    path = heartbeat_file(directory, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{threading.get_ident()}")
    scratch.write_text(problem or "")
    os.replace(scratch, path)


def start_heartbeat(
    directory: str, kind: str, *, interval: float = 5.0, problem: Callable[[], str | None] = lambda: None
) -> threading.Thread:
    """A daemon thread writing this process's heartbeat every ``interval`` s with what ``problem()`` reports
    (``None``: healthy). The file is removed when the process exits normally."""

    def beat() -> None:
        while True:
            try:
                touch(directory, kind, problem())
            except Exception:  # a full disk or a bug in problem(): the file goes stale and the probe says so
                logger.warning("could not write the %s heartbeat", kind, exc_info=True)
            time.sleep(interval)

    atexit.register(remove, directory, kind, os.getpid())
    thread = threading.Thread(target=beat, name=f"zapq-{kind}-heartbeat", daemon=True)
    thread.start()
    return thread
