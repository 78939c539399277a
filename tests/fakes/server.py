"""Run an ASGI app (a fake provider, a webhook receiver) on a free 127.0.0.1 port for the length of a test.

Two ways, both context managers that yield the base URL (``http://127.0.0.1:<port>``) and stop cleanly:

* :func:`running_app` serves an app object from a uvicorn server in a background thread (fast to start;
  the test can reach ``app.state`` directly).
* :func:`running_module` starts ``python -m <module> --port N …`` in a subprocess (its own GIL: use it for
  load tests) and polls a health URL until it answers, within a deadline.

Neither sleeps a fixed time to wait for readiness.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from libs.ops.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 15.0
STOP_DEADLINE_S = 5.0


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that reports the end of its start-up through a ``threading.Event``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _bound_socket(host: str, port: int = 0) -> socket.socket:
    """A listening-to-be socket on ``port``; with 0, on a free port below the ephemeral range (see
    :func:`libs.ops.processes.free_port`), so a server stopped and brought back on it finds it free."""
    if port:
        return _bind(host, port)
    for _ in range(19):  # another process may take a port between free_port's check and this bind
        with contextlib.suppress(OSError):
            return _bind(host, free_port(host))
    return _bind(host, free_port(host))


@contextlib.contextmanager
def running_app(app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` in a background thread on a free port (or ``port``: to bring a server back where it was);
    yield its base URL; stop it on exit.

    The listening socket is bound before the thread starts (no port race); start-up is awaited through an
    event set by uvicorn's own start-up, bounded by ``START_DEADLINE_S``.
    """
    sock = _bound_socket(host, port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", loop="asyncio", http="h11")
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"asgi:{port}", daemon=True)
    thread.start()
    try:
        if not server.ready.wait(START_DEADLINE_S) or not server.started:
            raise RuntimeError(f"ASGI app did not start on {host}:{port} within {START_DEADLINE_S} s")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_DEADLINE_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_DEADLINE_S)
        sock.close()


def wait_until_healthy(url: str, *, deadline_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 2xx, the process dies, or ``deadline_s`` passes (then raise)."""
    end = time.monotonic() + deadline_s
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server process exited with {process.returncode} before answering {url}")
            try:
                if client.get(url).is_success:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() >= end:
                raise RuntimeError(f"{url} did not answer within {deadline_s} s")
            time.sleep(0.02)  # poll interval, not a readiness guess


@contextlib.contextmanager
def running_module(
    module: str,
    args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    health_path: str = "/_fake/health",
    python: str = sys.executable,
) -> Iterator[str]:
    """Run ``python -m module --host H --port N *args`` in a subprocess; yield its base URL once healthy."""
    port = free_port(host)
    command = [python, "-m", module, "--host", host, "--port", str(port), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    base_url = f"http://{host}:{port}"
    try:
        wait_until_healthy(base_url + health_path, deadline_s=START_DEADLINE_S, process=process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_DEADLINE_S)
