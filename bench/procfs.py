"""Peak memory of worker processes, read from ``/proc`` (Linux only; no psutil needed).

``VmHWM`` is the kernel's high-water mark of a process's resident set, so one late read gives its peak;
:class:`PeakRss` still samples in a thread so that a process which exits (or is restarted by its master)
during the run is not missed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` list), empty when it is gone."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(part) for part in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(set(found))


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (``""`` when it is gone)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set size of ``pid`` in KiB, ``None`` when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def worker_pids(master: int) -> list[int]:
    """The worker processes of a pre-forking master (Dramatiq, uvicorn ``--workers``): its children, minus
    multiprocessing's helper processes."""
    return [pid for pid in children(master) if "resource_tracker" not in cmdline(pid)]


def server_pids(master: int) -> list[int]:
    """The processes serving requests for a server started as ``master``: its workers, or itself alone."""
    return worker_pids(master) or [master]


@dataclass
class Peak:
    """The largest ``VmHWM`` seen for one process."""

    pid: int
    kb: int

    @property
    def mb(self) -> float:
        """Peak RSS in MiB."""
        return self.kb / 1024


class PeakRss:
    """Sample the worker processes of some masters every ``interval`` seconds until stopped."""

    def __init__(self, masters: list[int], *, interval: float = 0.5) -> None:
        self.masters = masters
        self.interval = interval
        self.peaks: dict[int, Peak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self) -> None:
        """Read every worker's ``VmHWM`` once."""
        for master in self.masters:
            for pid in server_pids(master):
                kb = vm_hwm_kb(pid)
                if kb is not None and kb > self.peaks.get(pid, Peak(pid, 0)).kb:
                    self.peaks[pid] = Peak(pid, kb)

    def stop(self) -> list[Peak]:
        """Stop sampling (after a last sample) and return the peaks, largest first."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=5)
            self.sample()
        return self.result()

    def result(self) -> list[Peak]:
        """Peaks so far, largest first."""
        return sorted(self.peaks.values(), key=lambda peak: -peak.kb)

    def max_mb(self) -> float | None:
        """The largest peak in MiB, ``None`` when nothing was sampled."""
        peaks = self.result()
        return peaks[0].mb if peaks else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (processes that are gone count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks
