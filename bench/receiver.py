"""A fast webhook receiver for the ``events`` bench: answers every POST after a fixed delay, counts it per path
and keeps its ``webhook-id`` and arrival time.

Raw asyncio protocol + ``httptools`` on uvloop (one process absorbs several thousand deliveries per second,
so the receiver is never what the bench measures). It does not verify signatures (the tests' fake CRM does).

``python -m bench.receiver --port N --latency-ms 50``; ``GET /_bench/stats`` → ``{"total", "by_path"}``,
``GET /_bench/received`` → ``[[path, webhook_id, unix time], …]``, ``POST /_bench/reset``, ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

import httptools
import orjson

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


class State:
    """What the receiver saw."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.by_path: Counter[str] = Counter()
        self.received: list[tuple[str, str, float]] = []


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests answered in order, each after the delay."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.webhook_id = b""
        self.body: list[bytes] = []
        self._header = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.webhook_id, self.body = b"", b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"webhook-id":
            self.webhook_id = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.decode().split("?", 1)[0]
        method = self.parser.get_method()
        if path.startswith("/_bench/") or path == "/healthz":
            self._write(self._control(method, path))
            return
        self.state.by_path[path] += 1
        self.state.received.append((path, self.webhook_id.decode(), time.time()))
        asyncio.get_running_loop().call_later(self.state.latency_s, self._write, OK)

    def _control(self, method: bytes, path: str) -> bytes:
        if path == "/_bench/stats":
            body = orjson.dumps({"total": sum(self.state.by_path.values()), "by_path": self.state.by_path})
        elif path == "/_bench/received":
            body = orjson.dumps(self.state.received)
        elif path == "/_bench/reset" and method == b"POST":
            self.state.by_path.clear()
            self.state.received.clear()
            body = b"{}"
        else:
            body = b'{"ok": true}'
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def _write(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


async def serve(host: str, port: int, latency_s: float) -> None:
    """Serve until cancelled."""
    state = State(latency_s)
    server = await asyncio.get_running_loop().create_server(lambda: Connection(state), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.receiver``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
