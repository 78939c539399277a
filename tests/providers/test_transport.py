"""``LeanTransport`` over real sockets on 127.0.0.1, on asyncio's loop and on uvloop.

Byte-level cases use a tiny in-process ``asyncio.start_server`` server (:class:`RawServer`) whose handlers
answer with canned bytes and report what they saw through queues, so the tests wait on events, never on the
clock; the few timeouts below are either the behaviour under test or upper bounds (``BOUND``). The failure
cases also run against httpx's default transport, to pin that both raise the same exception class.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.errors import ProviderTimeoutError, ProviderTransientError
from libs.ops.processes import free_port
from libs.providers import OutboundText
from libs.providers.transport import (
    DEFAULT_MAX_DECODED_BYTES,
    DISCONNECTED,
    LeanTransport,
    NoCookieJar,
    provider_http_client,
)
from tests.providers.conftest import configure, meta_client, recorded_sends

pytestmark = pytest.mark.anyio

BOUND = 5.0
"""Upper bound for any wait in these tests (a failing test fails instead of hanging)."""

TIMEOUT = httpx.Timeout(BOUND)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every test here runs on the standard asyncio loop and on uvloop (the sender's loop)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


# --- a raw HTTP server for byte-level cases -----------------------------------------------------------


def reply(body: bytes = b"ok", *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length."""
    return b"HTTP/1.1 %b\r\nContent-Length: %d\r\n%b\r\n%b" % (status, len(body), headers, body)


OK = reply()


class Peer:
    """One accepted connection, as a handler sees it."""

    def __init__(self, server: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.index = index
        self.reader = reader
        self.writer = writer

    async def request(self) -> bytes | None:
        """Read one request (head and body); ``None`` at EOF. It is logged and announced on ``arrived``."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.lower().split(b"\r\n")
        body = b""
        if b"transfer-encoding: chunked" in lines:
            body = await self.reader.readuntil(b"0\r\n\r\n")
        for line in lines:
            if line.startswith(b"content-length:"):
                body = await self.reader.readexactly(int(line.split(b":")[1]))
        target = head.split(b" ")[1]
        self.server.log.append((self.index, target))
        self.server.arrived.put_nowait(target)
        return head + body

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the client."""
        self.writer.write(data)

    async def until_client_closes(self) -> bytes:
        """Read until the client closes the connection; return what it sent meanwhile."""
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await self.reader.read(65536):
                data += chunk
        return data

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    """Counts accepted connections, logs ``(connection index, request target)`` and announces events.

    ``arrived`` gets each request target as it is read, ``ended`` each connection index once its handler
    has returned and the socket is closed. ``gate(target)`` is an event a gated handler waits on.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.url = ""
        self.accepted = 0
        self.log: list[tuple[int, bytes]] = []
        self.arrived: asyncio.Queue[bytes] = asyncio.Queue()
        self.ended: asyncio.Queue[int] = asyncio.Queue()
        self.gates: defaultdict[bytes, asyncio.Event] = defaultdict(asyncio.Event)
        self.tasks: set[asyncio.Task[Any]] = set()

    def gate(self, target: bytes) -> asyncio.Event:
        """The event a gated handler waits on before answering ``target``."""
        return self.gates[target]

    async def next_arrival(self) -> bytes:
        """The next request target the server read."""
        async with asyncio.timeout(BOUND):
            return await self.arrived.get()

    async def next_end(self) -> int:
        """The index of the next connection the server finished with."""
        async with asyncio.timeout(BOUND):
            return await self.ended.get()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The ``asyncio.start_server`` callback."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        index = self.accepted
        self.accepted += 1
        try:
            await self.handler(Peer(self, index, reader, writer))
        except asyncio.CancelledError:
            pass  # only raw_server() cancels, on exit; ending quietly keeps asyncio's stream callback quiet
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.ended.put_nowait(index)
            self.tasks.discard(task)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, **kwargs: Any) -> AsyncIterator[RawServer]:
    """Serve ``handler`` on a free 127.0.0.1 port; cancel leftover handlers on exit."""
    raw = RawServer(handler)
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0, **kwargs)
    port = server.sockets[0].getsockname()[1]
    raw.url = f"{'https' if kwargs.get('ssl') else 'http'}://127.0.0.1:{port}"
    try:
        yield raw
    finally:
        server.close()
        for task in list(raw.tasks):
            task.cancel()
        await asyncio.gather(*raw.tasks, return_exceptions=True)
        await server.wait_closed()


def answer(*replies: bytes) -> Handler:
    """Answer the n-th request on a connection with ``replies[n]`` (the last repeats); keep it open."""

    async def handler(peer: Peer) -> None:
        count = 0
        while await peer.request() is not None:
            peer.send(replies[min(count, len(replies) - 1)])
            count += 1

    return handler


async def gated(peer: Peer) -> None:
    """Answer each request once the test opens its gate; the body is the connection's index."""
    while (request := await peer.request()) is not None:
        await peer.server.gate(request.split(b" ")[1]).wait()
        peer.send(reply(str(peer.index).encode()))


def per_connection(*handlers: Handler) -> Handler:
    """Connection n is handled by ``handlers[n]`` (the last repeats)."""

    async def handler(peer: Peer) -> None:
        await handlers[min(peer.index, len(handlers) - 1)](peer)

    return handler


def then_hang(data: bytes = b"") -> Handler:
    """Read a request, send ``data`` (maybe nothing), then wait until the client closes."""

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(data)
            await peer.until_client_closes()

    return handler


def then_close(data: bytes = b"") -> Handler:
    """Read a request, send ``data`` (maybe nothing), then close the connection."""

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            peer.send(data)

    return handler


async def then_reset(peer: Peer) -> None:
    """Read a request, then reset the connection."""
    if await peer.request() is not None:
        peer.reset()


def lean(**kwargs: Any) -> httpx.AsyncClient:
    """An httpx client over a ``LeanTransport(**kwargs)``."""
    return httpx.AsyncClient(transport=LeanTransport(**kwargs), timeout=TIMEOUT)


# --- keep-alive and pooling ---------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection() -> None:
    async with raw_server(answer(OK)) as server, lean() as client:
        for _ in range(5):
            response = await client.get(f"{server.url}/x?q=1")
            assert (response.status_code, response.content) == (200, b"ok")
            assert (response.http_version, response.reason_phrase) == ("HTTP/1.1", "OK")
            assert response.elapsed.total_seconds() >= 0  # httpx set it: the body went through its stream
    assert server.accepted == 1
    assert server.log == [(0, b"/x?q=1")] * 5


async def test_idle_connections_are_reused_newest_first() -> None:
    async with raw_server(gated) as server, lean() as client:
        first = asyncio.create_task(client.get(f"{server.url}/a"))
        second = asyncio.create_task(client.get(f"{server.url}/b"))
        assert {await server.next_arrival(), await server.next_arrival()} == {b"/a", b"/b"}
        server.gate(b"/a").set()
        a_conn = (await first).text
        server.gate(b"/b").set()
        b_conn = (await second).text
        server.gate(b"/c").set()
        # the connection that went idle last is the one reused
        assert (await client.get(f"{server.url}/c")).text == b_conn != a_conn
    assert server.accepted == 2


async def test_requests_beyond_the_limit_wait_and_then_time_out_for_a_slot() -> None:
    async with raw_server(gated) as server, lean(max_connections=1) as client:
        holding = asyncio.create_task(client.get(f"{server.url}/a"))
        assert await server.next_arrival() == b"/a"
        with pytest.raises(httpx.PoolTimeout) as caught:
            await client.get(f"{server.url}/b", timeout=httpx.Timeout(BOUND, pool=0.05))
        assert caught.value.request.url == f"{server.url}/b"
        server.gate(b"/a").set()
        assert (await holding).status_code == 200
        server.gate(b"/c").set()
        assert (await client.get(f"{server.url}/c")).text == "0"
    assert server.accepted == 1 and server.log == [(0, b"/a"), (0, b"/c")]


async def test_waiting_requests_are_served_first_come_first_served() -> None:
    async with raw_server(gated) as server, lean(max_connections=1) as client:
        holding = asyncio.create_task(client.get(f"{server.url}/a"))
        assert await server.next_arrival() == b"/a"
        waiting = [asyncio.create_task(client.get(f"{server.url}/w{n}")) for n in range(5)]
        await asyncio.sleep(0)  # one loop turn: each task runs up to its wait for a connection (no I/O race)
        for n in range(5):
            server.gate(f"/w{n}".encode()).set()
        server.gate(b"/a").set()
        await asyncio.gather(holding, *waiting)
    assert server.accepted == 1
    assert [target for _, target in server.log] == [b"/a"] + [f"/w{n}".encode() for n in range(5)]


async def test_many_concurrent_requests_stay_within_the_limit() -> None:
    async with raw_server(answer(OK)) as server, lean(max_connections=4) as client:
        responses = await asyncio.gather(*(client.get(f"{server.url}/{n}") for n in range(200)))
    assert all(r.content == b"ok" for r in responses)
    assert server.accepted <= 4 and len(server.log) == 200


async def test_idle_connections_older_than_keepalive_expiry_are_closed() -> None:
    async with raw_server(answer(OK)) as server, lean(keepalive_expiry=0.0) as client:
        await client.get(server.url)
        await client.get(server.url)
        # the first connection was closed instead of reused
        assert await server.next_end() == 0
    assert server.accepted == 2
    async with raw_server(answer(OK)) as server, lean(keepalive_expiry=60.0) as client:
        await client.get(server.url)
        await client.get(server.url)
    assert server.accepted == 1


async def test_a_connection_the_server_closed_while_idle_is_not_handed_out() -> None:
    # the server announces keep-alive but closes every connection after its first answer
    async with raw_server(then_close(OK)) as server, lean() as client:
        for n in range(3):
            assert (await client.get(server.url)).content == b"ok"
            assert await server.next_end() == n
    assert server.accepted == 3


def _serve_once_then_close_on_signal(
    listener: socket.socket, close_now: threading.Event, closed: threading.Event
) -> None:
    """A blocking one-connection server for a thread: answer one request, close when told to."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(OK)
        close_now.wait(BOUND)
    closed.set()


async def test_a_close_the_event_loop_has_not_seen_yet_is_caught_before_reuse() -> None:
    # The server (a thread) closes the idle connection while the event loop is blocked, so the loop has not
    # read the EOF when the next request picks a connection: only the pre-reuse socket check can see it.
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    close_now, closed = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve_once_then_close_on_signal, args=(listener, close_now, closed))
    thread.start()
    try:
        async with lean() as client:
            assert (await client.get(url)).content == b"ok"
            close_now.set()
            assert closed.wait(BOUND)  # blocks the event loop on purpose
            listener.close()
            # Had the stale connection been used, the request would have been written and failed with a
            # RemoteProtocolError or ReadError. It was dropped, and a new connection to the closed listener
            # is refused: ConnectError, nothing sent.
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
    finally:
        close_now.set()
        thread.join(BOUND)
        listener.close()


# --- response framing ---------------------------------------------------------------------------------


async def test_gzip_encoded_json_is_decoded_like_httpx_does() -> None:
    # httpx asks for gzip (Accept-Encoding); an API that compresses its JSON must read the same as one that does not
    body = gzip.compress(b'{"messages": [{"id": "wamid.GZ"}]}')
    compressed = reply(body, headers=b"Content-Encoding: gzip\r\nContent-Type: application/json\r\n")
    async with raw_server(answer(compressed)) as server, lean() as client:
        response = await client.post(server.url, json={"to": "x"})
        assert response.json() == {"messages": [{"id": "wamid.GZ"}]}
        assert b"gzip" in response.request.headers["accept-encoding"].encode()


BOMB_INFLATED = 4 * DEFAULT_MAX_DECODED_BYTES
"""What the zip-bomb responses below inflate to: four times the default cap on a decoded body."""


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Zero bytes ``BOMB_INFLATED`` long, compressed once per encoding (a few dozen KiB each)."""
    zeros = b"\0" * BOMB_INFLATED
    once = gzip.compress(zeros, mtime=0)
    return {"gzip": once, "deflate": zlib.compress(zeros, 9), "gzip, gzip": gzip.compress(once, mtime=0)}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, gzip"])
async def test_a_compressed_body_that_inflates_past_the_cap_is_a_protocol_error(
    encoding: str, bombs: dict[str, bytes]
) -> None:
    # Given a server answering with a body of a few dozen KiB (far under the raw cap) that inflates to four
    # times the cap on a decoded body (a "zip bomb")
    body = bombs[encoding]
    assert len(body) < 512 * 1024
    bomb = reply(body, headers=b"Content-Encoding: %b\r\nContent-Type: application/json\r\n" % encoding.encode())
    async with raw_server(per_connection(answer(bomb), answer(reply(b"fine")))) as server, lean() as client:
        # When the client reads it, the attempt fails with a transport error naming the cap, before inflating it
        with pytest.raises(httpx.RemoteProtocolError, match=f"exceeds {DEFAULT_MAX_DECODED_BYTES} bytes once decoded"):
            await client.get(server.url)
        # And the client carries on: the next request (on a new connection) reads normally
        assert (await client.get(server.url)).content == b"fine"


async def test_a_compressed_body_within_the_cap_decodes_as_httpx_does() -> None:
    # Given a gzip body that inflates to exactly the cap
    plain = b"x" * 4096
    compressed = reply(gzip.compress(plain), headers=b"Content-Encoding: gzip\r\n")
    async with raw_server(answer(compressed)) as server, lean(max_decoded_bytes=4096) as client:
        # Then it reads whole, with its headers as the server sent them
        response = await client.get(server.url)
        assert response.content == plain
        assert response.headers["content-encoding"] == "gzip"


async def test_a_coding_whose_decoded_size_cannot_be_bounded_is_refused() -> None:
    # Given a server answering in brotli, which the provider client never asks for
    brotli = reply(b"\x8b\x00\x80ok\x03", headers=b"Content-Encoding: br\r\n")
    async with raw_server(answer(brotli)) as server, provider_http_client(timeout=TIMEOUT) as client:
        # Then the request fails with a transport error, whether or not a brotli decoder is installed
        with pytest.raises(httpx.RemoteProtocolError, match="Unsupported Content-Encoding 'br'"):
            await client.get(server.url)
        assert server.log == [(0, b"/")]
    # And the provider client only ever asks for codings the transport bounds
    assert client.headers["accept-encoding"] == "gzip, deflate"


async def test_chunked_body_is_decoded_and_the_connection_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with raw_server(answer(chunked)) as server, lean() as client:
        for _ in range(2):
            response = await client.get(server.url)
            assert response.content == b"hello world"
            assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    assert server.accepted == 1


async def test_body_delimited_by_connection_close() -> None:
    close_delimited = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with raw_server(then_close(close_delimited)) as server, lean() as client:
        assert (await client.get(server.url)).content == b"until the end"
        assert (await client.get(server.url)).content == b"until the end"
    assert server.accepted == 2


@pytest.mark.parametrize(
    "closing",
    [
        reply(headers=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_response_that_closes_the_connection_is_not_reused(closing: bytes) -> None:
    # the server keeps the socket open anyway: a second request on it would show up in the log
    async with raw_server(answer(closing)) as server, lean() as client:
        first = await client.get(server.url)
        assert first.content == b"ok"
        assert first.http_version == ("HTTP/1.0" if closing.startswith(b"HTTP/1.0") else "HTTP/1.1")
        await client.get(server.url)
    assert server.accepted == 2 and server.log == [(0, b"/"), (1, b"/")]


async def test_a_client_connection_close_header_is_honoured() -> None:
    async with raw_server(answer(OK)) as server, lean() as client:
        await client.get(server.url, headers={"Connection": "close"})
        await client.get(server.url)
    assert server.accepted == 2


async def test_head_204_and_304_have_no_body_and_keep_the_connection() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",  # answer to HEAD: the length, no body
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n",
        OK,
    ]
    async with raw_server(answer(*replies)) as server, lean() as client:
        head = await client.head(server.url)
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "1000")
        assert (await client.delete(server.url)).status_code == 204
        assert (await client.get(server.url)).status_code == 304
        assert (await client.get(server.url)).content == b"ok"
    assert server.accepted == 1


async def test_interim_1xx_responses_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + reply(b"final")
    async with raw_server(answer(interim)) as server, lean() as client:
        response = await client.post(server.url, content=b"payload")
        assert (response.status_code, response.content) == (200, b"final")
        assert "link" not in response.headers
        assert (await client.post(server.url, content=b"again")).content == b"final"
    assert server.accepted == 1


async def test_request_body_and_headers_go_out_as_httpx_built_them() -> None:
    seen: list[bytes] = []

    async def record(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            seen.append(request)
            peer.send(OK)

    async def stream() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b"part two"

    async with raw_server(record) as server, lean() as client:
        await client.post(f"{server.url}/p", json={"a": "é"}, headers={"X-Trace": "1"})
        await client.post(f"{server.url}/s", content=stream())
    json_request, streamed_request = seen
    assert json_request.startswith(b"POST /p HTTP/1.1\r\n")
    body = '{"a":"é"}'.encode()
    assert b"\r\nX-Trace: 1\r\n" in json_request
    assert b"\r\nContent-Length: %d\r\n" % len(body) in json_request
    assert json_request.endswith(b"\r\n\r\n" + body)
    # a body httpx would stream as chunked is read whole and sent as a single chunk
    assert b"\r\nTransfer-Encoding: chunked\r\n" in streamed_request
    assert streamed_request.endswith(b"\r\n\r\n12\r\npart one, part two\r\n0\r\n\r\n")


async def test_a_header_with_cr_or_lf_is_refused_before_any_io() -> None:
    async with raw_server(answer(OK)) as server, lean() as client:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(server.url, headers={"X-Evil": "a\r\nX-Injected: 1"})
        assert (await client.get(server.url)).content == b"ok"
    assert server.log == [(0, b"/")]


async def test_body_over_the_cap_is_a_protocol_error_and_closes_the_connection() -> None:
    chunked_big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n123456\r\n6\r\n789012\r\n0\r\n\r\n"
    handler = per_connection(then_hang(reply(b"x" * 11)), then_hang(chunked_big), answer(reply(b"x" * 10)))
    async with raw_server(handler) as server, lean(max_body_bytes=10) as client:
        for index in (0, 1):
            with pytest.raises(httpx.RemoteProtocolError, match="exceeds 10 bytes"):
                await client.get(server.url)
            assert await server.next_end() == index  # the client closed it
        assert (await client.get(server.url)).content == b"x" * 10


# --- failures: the same exception class as httpx's default transport --------------------------------


@pytest.fixture(params=["lean", "httpx-default"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which transport the failure tests use: LeanTransport, or httpx's default one (the reference)."""
    param: str = request.param
    return param


@pytest.fixture
def make_client(kind: str) -> Callable[..., httpx.AsyncClient]:
    """Builds a client over the transport named by ``kind``."""

    def build(timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
        transport = LeanTransport() if kind == "lean" else httpx.AsyncHTTPTransport()
        return httpx.AsyncClient(transport=transport, timeout=timeout)

    return build


async def test_server_closing_after_the_request_without_answering(make_client: Callable[..., Any]) -> None:
    async with raw_server(then_close()) as server, make_client() as client:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(f"{server.url}/nothing")
    assert str(caught.value) == DISCONNECTED
    assert caught.value.request.url == f"{server.url}/nothing"


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["short-body", "unfinished-chunks", "cut-head"],
)
async def test_server_closing_mid_response(make_client: Callable[..., Any], kind: str, partial: bytes) -> None:
    async with raw_server(then_close(partial)) as server, make_client() as client:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(server.url)
    assert caught.value.request.url == server.url
    if kind == "lean":  # (httpcore says "without sending a response" for a cut head too)
        assert str(caught.value) == "Server disconnected before the response was complete."


async def test_server_resetting_the_connection_is_a_read_error(make_client: Callable[..., Any]) -> None:
    async with raw_server(then_reset) as server, make_client() as client:
        with pytest.raises(httpx.ReadError) as caught:
            await client.get(server.url)
    assert caught.value.request.url == server.url


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"],
    ids=["not-http", "bad-length"],
)
async def test_a_malformed_response_is_a_protocol_error(make_client: Callable[..., Any], garbage: bytes) -> None:
    async with raw_server(then_hang(garbage)) as server, make_client() as client:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(server.url)
    assert caught.value.request.url == server.url


async def test_no_answer_in_time_is_a_read_timeout(make_client: Callable[..., Any]) -> None:
    server_context = raw_server(per_connection(then_hang(), answer(OK)))
    async with server_context as server, make_client(httpx.Timeout(BOUND, read=0.1)) as client:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get(server.url)
        assert caught.value.request.url == server.url
        assert await server.next_end() == 0  # the timed-out connection was closed
        assert (await client.get(server.url)).content == b"ok"
    assert server.accepted == 2


async def test_connection_refused_is_a_connect_error(make_client: Callable[..., Any]) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    async with make_client() as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(url)
    assert caught.value.request.url == url


async def test_unknown_host_is_a_connect_error(make_client: Callable[..., Any]) -> None:
    async with make_client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://no-such-host.invalid/")


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A 127.0.0.1 port whose accept queue is full, so a new connection attempt hangs in SYN-SENT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout(make_client: Callable[..., Any], unanswered_port: int) -> None:
    async with make_client(httpx.Timeout(BOUND, connect=0.1)) as client:
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(f"http://127.0.0.1:{unanswered_port}/")


# --- cancellation and closing -------------------------------------------------------------------------


async def test_a_cancelled_request_closes_its_connection() -> None:
    async with raw_server(per_connection(then_hang(), answer(OK))) as server, lean() as client:
        task = asyncio.create_task(client.get(server.url))
        await server.next_arrival()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.next_end() == 0
        assert (await client.get(server.url)).content == b"ok"
    assert server.accepted == 2 and server.log[-1][0] == 1


async def test_a_request_cancelled_while_waiting_for_a_slot_gives_nothing_away() -> None:
    async with raw_server(gated) as server, lean(max_connections=1) as client:
        holding = asyncio.create_task(client.get(f"{server.url}/a"))
        await server.next_arrival()
        waiting = asyncio.create_task(client.get(f"{server.url}/never"))
        await asyncio.sleep(0)  # one loop turn: it is now queued for the connection
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        server.gate(b"/a").set()
        await holding
        server.gate(b"/b").set()
        assert (await client.get(f"{server.url}/b")).text == "0"
    assert [target for _, target in server.log] == [b"/a", b"/b"]


async def test_aclose_closes_everything_and_refuses_later_requests() -> None:
    transport = LeanTransport(max_connections=1)
    async with raw_server(answer(OK)) as idle_server, raw_server(then_hang()) as busy_server:
        client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT)
        await client.get(idle_server.url)
        in_flight = asyncio.create_task(client.get(f"{busy_server.url}/busy"))
        assert await busy_server.next_arrival() == b"/busy"
        waiting = asyncio.create_task(client.get(f"{busy_server.url}/queued"))
        await asyncio.sleep(0)  # one loop turn: it is now queued for the busy connection
        await transport.aclose()
        with pytest.raises(httpx.ReadError):  # it may have reached the server: not a ConnectError
            await in_flight
        with pytest.raises(httpx.ConnectError):  # never sent
            await waiting
        assert await idle_server.next_end() == 0 and await busy_server.next_end() == 0
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", idle_server.url))
        await client.aclose()
    assert (idle_server.accepted, busy_server.accepted) == (1, 1)
    assert busy_server.log == [(0, b"/busy")]


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (needs the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_with_keep_alive(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with raw_server(answer(OK), ssl=server_context) as server:
        async with lean(ssl_context=ssl.create_default_context(cafile=str(cert))) as client:
            for _ in range(3):
                assert (await client.get(f"{server.url}/tls")).content == b"ok"
        assert server.accepted == 1
        # the default context does not trust the certificate: nothing sent, ConnectError
        async with lean() as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(server.url)


# --- provider_http_client -----------------------------------------------------------------------------


async def test_provider_client_never_stores_or_sends_cookies_and_never_follows_redirects() -> None:
    seen: list[bytes] = []
    set_cookie = reply(headers=b"Set-Cookie: session=company-a; Path=/\r\n")
    redirect = reply(status=b"302 Found", headers=b"Location: /elsewhere\r\n")

    async def record(peer: Peer) -> None:
        replies = [set_cookie, OK, redirect]
        while (request := await peer.request()) is not None:
            seen.append(request)
            peer.send(replies[min(len(seen), 3) - 1])

    async with raw_server(record) as server, provider_http_client(timeout=TIMEOUT) as client:
        assert isinstance(client.cookies.jar, NoCookieJar)
        assert (await client.get(f"{server.url}/company-a")).headers["set-cookie"].startswith("session=")
        await client.get(f"{server.url}/company-b")
        client.cookies.set("forced", "1")
        assert (await client.get(f"{server.url}/c")).status_code == 302
    assert not list(client.cookies.jar)
    assert all(b"\r\ncookie:" not in request.lower() for request in seen)
    assert server.log == [(0, b"/company-a"), (0, b"/company-b"), (0, b"/c")]


async def test_provider_client_against_the_fake_meta_api(meta_url: str) -> None:
    text = OutboundText(to="+16505551234", body="olá", client_ref="msg-1")
    async with provider_http_client(timeout=httpx.Timeout(BOUND, read=0.3)) as http:
        client = meta_client(http, meta_url)
        configure(meta_url, forced_errors=["timeout", "close"])
        with pytest.raises(ProviderTimeoutError) as timed_out:
            await client.send(text)
        assert isinstance(timed_out.value.__cause__, httpx.ReadTimeout)
        with pytest.raises(ProviderTransientError) as dropped:
            await client.send(text)
        assert isinstance(dropped.value.__cause__, httpx.RemoteProtocolError)
        assert (await client.send(text)).external_id.startswith("wamid.")
    assert len(recorded_sends(meta_url)) == 1
