"""A lean HTTP/1.1 keep-alive transport for httpx, for the provider clients' hot path.

Why it exists: httpx's default transport (httpcore + h11 + anyio) spends about 900 µs of CPU per request in
the message sender; with this one, built directly on asyncio ``Protocol`` callbacks and the ``httptools``
(llhttp) response parser, a whole ``client.post`` costs about 250 µs, most of it httpx's own request and
response objects. It plugs in under ``httpx.AsyncClient`` (see :func:`provider_http_client`), so the
provider clients, their error mapping and their tests are unchanged.

What it does:

* HTTP/1.1 over TCP (``http``) or TLS (``https``, verified against the system trust store, else certifi's
  bundle: :func:`libs.providers.trust.trust_context`, unless an ``ssl_context`` is given), one keep-alive pool
  per origin (scheme, host, port): at most
  ``max_connections`` connections per origin, idle ones reused newest first (LIFO) and closed instead once
  idle for ``keepalive_expiry`` seconds; requests over the limit wait first-come first-served.
* Responses delimited by Content-Length, chunked encoding (decoded by llhttp) or connection close;
  ``Connection: close`` and HTTP/1.0 responses, HEAD/1xx/204/304 responses, a body cap, and a cap on the
  body once decoded: httpx inflates ``Content-Encoding: gzip / deflate`` without a limit, so a small
  compressed answer (a "zip bomb") could take gigabytes. The transport inflates such a body once in
  bounded chunks, only counting, and fails the request past ``max_decoded_bytes``; httpx then decodes it as
  usual (headers untouched). A coding it cannot bound (anything but gzip, deflate, identity) is refused.
* A connection is reused only after a complete, keep-alive response. One on which a request failed,
  timed out or was cancelled (``asyncio.CancelledError``, e.g. a job time limit) is closed; an idle one the
  server closed (seen by the event loop, or pending in the socket: checked with ``poll`` before reuse) is
  never handed out.

Timeouts (``request.extensions["timeout"]``, ``None`` = no limit): ``connect`` bounds DNS + TCP + TLS
(``httpx.ConnectTimeout``), ``pool`` the wait for a free connection (``httpx.PoolTimeout``), ``read`` the
whole wait from handing the request to the socket until the last body byte (``httpx.ReadTimeout``; httpcore
applies it per read instead, so this is stricter). ``write`` is folded into ``read``: the request is small
and handed to the socket buffer in one call, so there is no separate write wait to bound.

Errors follow httpcore's meaning, because the sender decides from the exception type whether a send may
have reached the provider: nothing was sent for ``ConnectError`` / ``ConnectTimeout`` / ``PoolTimeout`` /
``UnsupportedProtocol`` / ``LocalProtocolError``; after the request was written, the server closing the
connection gives ``RemoteProtocolError`` ("Server disconnected without sending a response." when not one
response byte arrived), an OS error such as ECONNRESET ``ReadError``, a malformed or oversized response
(raw or decoded) ``RemoteProtocolError``, no complete response in time ``ReadTimeout``. Every one is an
``httpx.TransportError`` carrying the request.

* Through an ``http://`` proxy when ``proxies`` (a :class:`~libs.providers.proxies.ProxyConfig`, e.g. from
  ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``) names one for the origin: ``https`` in a ``CONNECT``
  tunnel (TLS inside it, end to end with the origin), ``http`` forwarded in absolute form. A refused tunnel
  is ``httpx.ProxyError``; nothing reached the origin then.

What it does not do: HTTP/2, https:// or SOCKS proxies, streaming (the request body is read whole, the response body is
buffered whole), protocol upgrades / CONNECT, ``Expect: 100-continue`` handshakes (a 1xx answer is skipped),
happy eyeballs, pools that shrink on their own (idle connections are pruned when their origin is next used
or when the server closes them).
"""

from __future__ import annotations

import asyncio
import http.client
import select
import ssl
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from http.cookiejar import Cookie, CookieJar
from typing import cast

import httptools
import httpx

from libs.providers.decoding import check_decoded_size
from libs.providers.maintained import maintained_transport
from libs.providers.proxies import Proxy, ProxyConfig, open_via_proxy
from libs.providers.trust import trust_context
from libs.settings import HttpTransport

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
    "LeanTransport",
    "NoCookieJar",
    "provider_http_client",
]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
"""A response body larger than this fails with ``httpx.RemoteProtocolError`` (and the connection is closed)."""

DEFAULT_MAX_DECODED_BYTES = 16 * 1024 * 1024
"""A compressed body (``Content-Encoding``) that would inflate past this fails with ``httpx.RemoteProtocolError``."""

#: What ``Accept-Encoding`` the provider client sends: only codings whose decoded size the transport bounds.
ACCEPT_ENCODING = "gzip, deflate"

MAX_HEAD_BYTES = 64 * 1024
"""Status line plus headers of one response may not exceed this (llhttp itself has no limit)."""

DISCONNECTED = "Server disconnected without sending a response."
"""httpcore's message for a connection closed after the request and before any response byte."""

Origin = tuple[bytes, bytes, int]
Timeouts = dict[str, float | None]


def _readable(fd: int) -> bool:
    """True when the socket has bytes or an EOF/error waiting that the event loop has not processed yet."""
    if fd < 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - platforms without poll()
    return bool(readable)


class _StopParsing(Exception):
    """Raised from a parser callback to make ``feed_data`` stop; the reason is in ``_Connection._error``."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the response with llhttp, resolves a future."""

    def __init__(self, pool: _Pool, max_body_bytes: int, max_decoded_bytes: int, truncate_body: bool = False) -> None:
        self._pool = pool
        self._max_body_bytes = max_body_bytes
        self._max_decoded_bytes = max_decoded_bytes
        self._truncate_body = truncate_body
        self._transport: asyncio.Transport | None = None
        self._fd = -1
        self.closed = False  # EOF, error or abort seen: never reuse
        self.reusable = False  # the last response was complete and allows another request
        self.idle = False  # sitting in the pool's idle deque
        self.idle_since = 0.0
        # state of the request in flight (reset by roundtrip())
        self._request: httpx.Request | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._head_request = False
        self._client_close = False
        self._received = False
        self._head_bytes = 0
        self._headers_done = False
        self._done = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._error: httpx.TransportError | None = None

    # --- used by the pool and the transport ------------------------------------------------------------

    def usable(self, now: float, keepalive_expiry: float) -> bool:
        """Whether this idle connection may carry another request."""
        transport = self._transport
        return (
            not self.closed
            and transport is not None
            and now - self.idle_since < keepalive_expiry
            and not transport.is_closing()
            and not _readable(self._fd)
        )

    def abort(self) -> None:
        """Close at once, dropping anything buffered; a request in flight is failed by ``fail`` first."""
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close gracefully (idle connections, on ``aclose``)."""
        self.closed = True
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def shut_down(self, message: str) -> None:
        """Close for good: a request in flight fails with ``ReadError(message)``, an idle connection closes."""
        if self._waiter is not None and not self._waiter.done():
            self.fail(httpx.ReadError(message, request=self._request))
        else:
            self.close()

    def fail(self, exc: httpx.TransportError) -> None:
        """Fail the request in flight with ``exc`` (if it is still waiting) and abort the connection."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    async def roundtrip(
        self, request: httpx.Request, data: bytes, timeout: float | None, *, head: bool, client_close: bool
    ) -> httpx.Response:
        """Write ``data`` (the serialised request) and wait for the complete response."""
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            # only a brand-new connection can get here (reuse checks this): the server closed it at once
            raise httpx.ConnectError("The server closed the connection before the request was sent.", request=request)
        loop = self._pool.loop
        self._request = request
        parser = self._parser = httptools.HttpResponseParser(self)
        self._head_request = head
        self._client_close = client_close
        self._received = self._headers_done = self._done = self.reusable = False
        self._head_bytes = self._body_bytes = 0
        self._reason = b""
        self._headers = []
        self._body = []
        self._error = None
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._timed_out) if timeout is not None else None
        try:
            transport.write(data)
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # mark it retrieved even when a cancellation overtook it
        version = b"HTTP/1.0" if parser.get_http_version() == "1.0" else b"HTTP/1.1"
        headers, body = self._headers, b"".join(self._body)
        self._request, self._headers, self._body = None, [], []  # an idle connection holds on to nothing
        check_decoded_size(headers, body, self._max_decoded_bytes, request)
        return httpx.Response(
            self._status,
            headers=headers,
            stream=httpx.ByteStream(body),
            extensions={"http_version": version, "reason_phrase": self._reason.strip()},
        )

    # --- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if self._waiter is None or parser is None or self._done:
            self.abort()  # bytes nobody asked for (idle, or after the response): the stream is out of step
            return
        self._received = True
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(self._protocol_error("Server switched protocols; upgrades are not supported."))
        except httptools.HttpParserError as exc:
            self.fail(self._error or self._protocol_error(f"Malformed response: {exc}"))
        else:
            if not self._headers_done and self._head_bytes > MAX_HEAD_BYTES:
                self.fail(self._protocol_error(f"Response head exceeds {MAX_HEAD_BYTES} bytes."))

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # let the transport close; connection_lost() decides what the EOF means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is not None:
                waiter.set_exception(httpx.ReadError(str(exc) or type(exc).__name__, request=self._request))
            elif self._headers_done and self._delimited_by_close():
                self._complete()
            elif not self._received:
                waiter.set_exception(self._protocol_error(DISCONNECTED))
            else:
                waiter.set_exception(self._protocol_error("Server disconnected before the response was complete."))
        if self.idle:
            self._pool.idle_lost(self)

    # --- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            self.reusable = False  # a second response to one request

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._status == 101:
            self._error = self._protocol_error("Server switched protocols; upgrades are not supported.")
            raise _StopParsing
        if self._head_request and self._status >= 200:
            self._complete()  # a HEAD response has no body, whatever its headers say

    def on_body(self, body: bytes) -> None:
        if self._done:
            self.reusable = False  # a body after a HEAD response's head
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body_bytes:
            if self._truncate_body:  # keep the first bytes, answer with them, never read (or reuse) the rest
                self._body.append(body[: len(body) - (self._body_bytes - self._max_body_bytes)])
                self.closed = True
                self._complete()
                raise _StopParsing
            self._error = self._protocol_error(f"Response body exceeds {self._max_body_bytes} bytes.")
            raise _StopParsing
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim response (100 Continue, 103 Early Hints): skip it
            self._headers_done = False
            self._head_bytes = 0
            self._reason = b""
            self._headers = []
            return
        self._complete()

    # --- internals -------------------------------------------------------------------------------------

    def _complete(self) -> None:
        if self._done:
            return
        assert self._parser is not None
        self._done = True
        self.reusable = not self.closed and not self._client_close and self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _delimited_by_close(self) -> bool:
        """True when the response has neither a Content-Length nor chunked encoding (its body ends at EOF)."""
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
                return False
        return True

    def _timed_out(self) -> None:
        self.fail(httpx.ReadTimeout("Timed out waiting for the response.", request=self._request))

    def _protocol_error(self, message: str) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(message, request=self._request)


class _Pool:
    """The connections to one origin: a count of slots taken, a LIFO deque of idle ones, FIFO waiters.

    A slot is taken by every connection that is being opened, in use or idle. A freed connection or slot
    goes straight to the oldest waiter (its future's result: the connection, or ``None`` = "open your own"),
    so a newcomer can never overtake it; hence idle connections and waiters never coexist.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, max_connections: int, keepalive_expiry: float, proxy: Proxy | None
    ) -> None:
        self.loop = loop
        self.proxy = proxy  # every connection of the pool goes through it
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.slots = 0
        self.idle: deque[_Connection] = deque()
        self.connections: set[_Connection] = set()
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self, request: httpx.Request, timeout: float | None) -> _Connection | None:
        """An idle connection, or ``None`` when the caller holds a slot and must open one."""
        while self.idle:
            conn = self.idle.pop()
            conn.idle = False
            if conn.usable(self.loop.time(), self.keepalive_expiry):
                return conn
            self.drop(conn)
        if self.slots < self.max_connections:
            self.slots += 1
            return None
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(waiter)
        timer = self.loop.call_later(timeout, _pool_timed_out, waiter, request) if timeout is not None else None
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result())  # handed over just as we were cancelled
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if handed is not None and not handed.usable(self.loop.time(), self.keepalive_expiry):
            self._forget(handed)  # it died on the way over; keep its slot and open a new one
            return None
        return handed

    def release(self, conn: _Connection) -> None:
        """Take back a connection after a successful request: to the oldest waiter, to idle, or closed."""
        if not conn.reusable or conn.closed:
            self.drop(conn)
            return
        conn.idle_since = self.loop.time()
        if not self._hand_over(conn):
            conn.idle = True
            self.idle.append(conn)

    def drop(self, conn: _Connection) -> None:
        """Abort ``conn`` and free its slot."""
        self._forget(conn)
        self.free_slot()

    def free_slot(self) -> None:
        """Pass a slot to the oldest waiter, or give it up."""
        if not self._hand_over(None):
            self.slots -= 1

    def add(self, conn: _Connection) -> None:
        """Track a newly opened connection (its slot is already taken)."""
        self.connections.add(conn)

    def idle_lost(self, conn: _Connection) -> None:
        """An idle connection was closed (by the server, or pruned): forget it and free its slot."""
        conn.idle = False
        self.idle.remove(conn)
        self.connections.discard(conn)
        self.free_slot()

    def close(self, request_error: str) -> None:
        """Close every connection; in-flight requests fail with ``ReadError``, waiters get a slot (and then
        find the transport closed)."""
        for conn in list(self.connections):
            conn.idle = False
            conn.shut_down(request_error)
        self.idle.clear()
        self.connections.clear()
        while self._hand_over(None):
            pass

    def _give_back(self, handed: _Connection | None) -> None:
        if handed is None:
            self.free_slot()
        else:
            self.release(handed)

    def _forget(self, conn: _Connection) -> None:
        conn.abort()
        self.connections.discard(conn)

    def _hand_over(self, handed: _Connection | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # skip waiters that timed out or were cancelled
                waiter.set_result(handed)
                return True
        return False


def _pool_timed_out(waiter: asyncio.Future[_Connection | None], request: httpx.Request) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.PoolTimeout("Timed out waiting for a free connection.", request=request))


class LeanTransport(httpx.AsyncBaseTransport):
    """An HTTP/1.1 keep-alive transport for ``httpx.AsyncClient`` (see the module docstring for scope).

    ``max_connections`` is per origin; ``keepalive_expiry`` (seconds) is how long a connection may sit
    idle and still be reused; ``max_body_bytes`` caps a response body as received (a longer one fails the
    request, or, with ``truncate_body``, is answered with its first ``max_body_bytes`` and the connection is
    closed), ``max_decoded_bytes`` once its ``Content-Encoding`` is undone. ``resolve(host, port)``, when given,
    picks the address to connect to (e.g. :meth:`libs.outbound.AddressGuard.resolve`); an ``OSError`` from it
    is a ``ConnectError``. ``proxies`` names the proxy of each origin (not with ``resolve``: the guard pins the
    address it checked, a proxy would connect by name). Use one instance per event loop.
    """

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        truncate_body: bool = False,
        resolve: Callable[[str, int], Awaitable[str]] | None = None,
        proxies: ProxyConfig | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if resolve is not None and proxies:
            raise ValueError("resolve and proxies exclude each other")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._max_body_bytes = max_body_bytes
        self._max_decoded_bytes = max_decoded_bytes
        self._truncate_body = truncate_body
        self._resolve = resolve
        self._proxies = proxies or ProxyConfig()
        self._pools: dict[Origin, _Pool] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"LeanTransport(max_connections={self._max_connections}, keepalive_expiry={self._keepalive_expiry})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on a pooled connection and return the response with its body read."""
        url = request.url
        scheme = url.raw_scheme
        if scheme == b"http":
            tls, default_port = False, 80
        elif scheme == b"https":
            tls, default_port = True, 443
        else:
            raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {url.scheme!r}.", request=request)
        origin = (scheme, url.raw_host, url.port or default_port)
        pool = self._pools.get(origin)
        if pool is None:
            self._check_open(request)
            proxy = self._proxies.proxy_for(url.scheme, url.host, origin[2]) if self._proxies else None
            pool = self._pools[origin] = _Pool(
                asyncio.get_running_loop(), self._max_connections, self._keepalive_expiry, proxy
            )
        timeouts: Timeouts = request.extensions.get("timeout") or {}
        forward_to = pool.proxy if pool.proxy is not None and not tls else None
        data, head, client_close = _serialise(request, await request.aread(), forward_to)

        conn = await pool.acquire(request, timeouts.get("pool"))
        if conn is None:
            try:
                conn = await self._connect(pool, origin, tls, request, timeouts.get("connect"))
            except BaseException:
                pool.free_slot()
                raise
        try:
            response = await conn.roundtrip(request, data, timeouts.get("read"), head=head, client_close=client_close)
        except BaseException:
            pool.drop(conn)
            raise
        pool.release(conn)
        return response

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail, later ones raise ``httpx.ConnectError``."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close("The transport was closed while the request was in flight.")

    def _check_open(self, request: httpx.Request) -> None:
        if self._closed:
            raise httpx.ConnectError("The transport is closed.", request=request)

    async def _connect(
        self, pool: _Pool, origin: Origin, tls: bool, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        self._check_open(request)
        host = origin[1].decode("ascii")
        context = self._tls_context() if tls else None

        def factory() -> _Connection:
            return _Connection(pool, self._max_body_bytes, self._max_decoded_bytes, self._truncate_body)

        try:
            async with asyncio.timeout(timeout):
                if pool.proxy is not None:
                    opened = await open_via_proxy(pool.loop, factory, pool.proxy, host, origin[2], context, request)
                    conn = cast(_Connection, opened)
                else:
                    address = await self._resolve(host, origin[2]) if self._resolve is not None else host
                    _, conn = await pool.loop.create_connection(
                        factory, address, origin[2], ssl=context, server_hostname=host if tls else None
                    )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(f"Timed out connecting to {host}:{origin[2]}.", request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        if self._closed:
            conn.abort()
            self._check_open(request)
        pool.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = trust_context()
        return self._ssl_context


def _serialise(request: httpx.Request, body: bytes, forward_to: Proxy | None = None) -> tuple[bytes, bool, bool]:
    """The request's bytes on the wire, whether it is a HEAD, and whether it asks to close the connection.

    Headers go out as httpx built them (it adds Host and Content-Length or Transfer-Encoding). A body httpx
    would have streamed with ``Transfer-Encoding: chunked`` was read whole, so it goes out as one chunk.
    A CR or LF inside a header (request splitting) raises ``httpx.LocalProtocolError`` before any I/O.
    Forwarded by a proxy (``forward_to``), the target is the absolute URL, with the proxy's credentials.
    """
    method = request.method.encode("ascii")
    url = request.url
    target = url.raw_path if forward_to is None else b"%b://%b%b" % (url.raw_scheme, url.netloc, url.raw_path)
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    chunked = client_close = False
    headers = request.headers.raw
    if forward_to is not None and forward_to.authorization is not None:
        headers = [*headers, (b"Proxy-Authorization", forward_to.authorization)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        if len(name) in (10, 17):
            lowered = name.lower()
            if lowered == b"connection":
                client_close = b"close" in value.lower()
            elif lowered == b"transfer-encoding":
                chunked = True
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise httpx.LocalProtocolError("Illegal CR or LF in the request line or a header.", request=request)
    if chunked:
        body = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return head + body, method == b"HEAD", client_close


class NoCookieJar(CookieJar):
    """A cookie jar that never stores a cookie, so none is ever sent."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def set_cookie_if_ok(self, cookie: Cookie, request: urllib.request.Request) -> None:
        return None

    def extract_cookies(self, response: http.client.HTTPResponse, request: urllib.request.Request) -> None:
        return None

    def make_cookies(self, response: http.client.HTTPResponse, request: urllib.request.Request) -> Sequence[Cookie]:
        return []

    def add_cookie_header(self, request: urllib.request.Request) -> None:
        return None


def provider_http_client(
    *,
    timeout: httpx.Timeout,
    max_connections: int = 512,
    keepalive_expiry: float = 5.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    truncate_body: bool = False,
    resolve: Callable[[str, int], Awaitable[str]] | None = None,
    transport: HttpTransport = "lean",
    trust_env: bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over :class:`LeanTransport` (or, with ``transport``, a maintained one: see
    :mod:`libs.providers.maintained`) for calling provider APIs.

    Cookies are off (:class:`NoCookieJar`): provider APIs are stateless, and one client is shared by every
    company's sends, so a cookie set in answer to one company's call must never ride on another company's
    call. Redirects are not followed (a provider answering with a redirect is an error to report, not to
    chase with our credentials). ``max_connections`` is per origin. Close the client with ``aclose()``.

    httpx still builds its urllib compatibility objects for cookie extraction (about 35 µs a response);
    there is no public API to skip that, and the jar above only saves the header parsing behind it.

    With ``trust_env`` (the default) the proxy variables ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` are
    honoured (:class:`~libs.providers.proxies.ProxyConfig`), except with ``resolve``; TLS trusts the system
    store (:func:`~libs.providers.trust.trust_context`) in every case.

    The event dispatcher uses the same client for customers' endpoints, with ``truncate_body`` (a receiver's
    answer is read up to a cap, never failed for its size) and ``resolve`` (the outbound address guard),
    which only LeanTransport offers.
    """
    proxies = ProxyConfig.from_environment() if trust_env and resolve is None else ProxyConfig()
    chosen: httpx.AsyncBaseTransport
    if transport == "lean":
        chosen = LeanTransport(
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            max_body_bytes=max_body_bytes,
            truncate_body=truncate_body,
            resolve=resolve,
            proxies=proxies,
        )
    else:
        if truncate_body or resolve is not None:
            raise ValueError(f"truncate_body and resolve need the lean transport, not {transport!r}")
        chosen = maintained_transport(
            transport,
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            max_body_bytes=max_body_bytes,
            max_decoded_bytes=DEFAULT_MAX_DECODED_BYTES,
            proxies=proxies,
            ssl_context=trust_context(),
        )
    return httpx.AsyncClient(
        transport=chosen,
        headers={"Accept-Encoding": ACCEPT_ENCODING},  # pinned: httpx would add br / zstd if installed
        timeout=timeout,
        cookies=NoCookieJar(),
        follow_redirects=False,
    )
