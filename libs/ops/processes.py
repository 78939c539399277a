"""Start and stop zapq's processes as children (demo, benchmarks, fault tests)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


#: Where :func:`free_port` looks when the kernel does not say its ephemeral range starts higher.
_PORTS_FROM = 10_000


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing is bound to right now, below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: once a test lets it go (a proxy that stops listening, a
    Redis or Postgres it restarts) any outgoing connection on the machine may be given it as its local port,
    and binding it again fails with "address already in use". Ports below the range are never handed out
    that way, so a process that stops and starts again gets its port back.
    """
    top = _ephemeral_range_start()
    if top <= _PORTS_FROM + 100:  # a kernel whose ephemeral range starts low: nothing safer to pick from
        top = 0
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_PORTS_FROM, top) if top else 0
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port on {host} below {top} after 200 tries")


def wait_http(url: str, *, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 2xx, the process exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).is_success:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class ProcessGroup:
    """Children started together and stopped together (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        #: The children the last :meth:`stop` had to SIGKILL (they outlived the grace period).
        self.killed: list[str] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` (``python -m`` style, with this interpreter) in its own session."""
        out = open(self.log_dir / f"{name}.log", "wb") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        return self.spawn(name, [sys.executable, *argv], stdout=out)

    def spawn(self, name: str, argv: Sequence[str], *, stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start ``argv`` as given in its own session (no terminal signal reaches it: :meth:`stop` stops it),
        its output and errors to ``stdout`` (a file, ``subprocess.PIPE`` or ``DEVNULL``)."""
        process = subprocess.Popen(
            list(argv), cwd=ROOT, env=self.env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, process))
        return process

    def stop(self, grace: float = 15.0) -> dict[str, int | None]:
        """Stop every child: SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns exit codes.

        SIGTERM goes to each child only, never to its whole process group: Dramatiq's main process passes
        it on to its workers, and a worker that gets a second TERM exits at once (code 1) instead of
        finishing its jobs. Whatever is left in the group afterwards is SIGKILLed.
        """
        for _, process in self.children:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        self.killed = []
        for name, process in self.children:
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
                self.killed.append(name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            if codes[name] is None:
                codes[name] = process.wait()
        self.children.clear()
        return codes

    @contextlib.contextmanager
    def running(self) -> Iterator[ProcessGroup]:
        """Stop every child on exit, whatever happens."""
        try:
            yield self
        finally:
            self.stop()
