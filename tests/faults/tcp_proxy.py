"""A TCP proxy of the test's own (asyncio, in a thread) that can reset, refuse and stall what it forwards.

Put it between a process and a dependency (``127.0.0.1:<proxy.port>`` → the dependency) to blink the
dependency without touching it — the shared Postgres stays up for everyone else:

* :meth:`TcpProxy.reset_and_refuse`: every open connection is reset (RST, both ways) and new ones are
  refused (the port stops listening) until :meth:`TcpProxy.restore`;
* :meth:`TcpProxy.stall`: connections stay open but nothing is forwarded (new ones are accepted and hang
  too) until :meth:`TcpProxy.restore`, which forwards what was held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from libs.ops.processes import free_port

#: Bytes read per forwarding step.
CHUNK = 65_536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections_seen = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (from the test's thread) -------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and listen."""
        self._thread.start()
        self._call(self._start())

    def close(self) -> None:
        """Stop listening, drop every connection, stop the thread."""
        with contextlib.suppress(Exception):
            self._call(self._reset_and_refuse())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def reset_and_refuse(self) -> int:
        """Reset every open connection and refuse new ones; returns how many were reset."""
        count: int = self._call(self._reset_and_refuse())
        return count

    def stall(self) -> None:
        """Hold every connection open and forward nothing (new connections are accepted and hang too)."""
        self._call(self._set_flowing(False))

    def restore(self) -> None:
        """Listen again (if refusing) and forward again (if stalled)."""
        self._call(self._restore())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=15)

    # -- on the loop ----------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _restore(self) -> None:
        if self._server is None:
            await self._listen()
        await self._set_flowing(True)

    async def _reset_and_refuse(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        writers, self._writers = self._writers, set()
        for writer in writers:
            _reset(writer)
        self.resets += len(writers) // 2
        return len(writers) // 2

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_writer)
            return
        self._writers |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()  # one side is gone: so is the other


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (linger 0), as a crashed host or a failed-over address does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    """A started :class:`TcpProxy`, closed afterwards."""
    proxy = TcpProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
