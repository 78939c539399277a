"""Outbound HTTP proxies from the standard variables, and the tunnel through one.

:class:`ProxyConfig` reads ``HTTP_PROXY`` / ``HTTPS_PROXY`` (``ALL_PROXY`` for both when they are unset) and
``NO_PROXY``, upper or lower case, through the standard library (:func:`urllib.request.getproxies`), as
httpx's ``trust_env`` does — these are the machine's variables, not zapq settings. ``NO_PROXY`` is a comma
list of host names (a name also covers its subdomains; ``.example.com`` the same), optionally with
``:port``, or ``*`` for every host (no CIDR ranges). Only ``http://`` proxies are supported
(``user:password@`` in the URL becomes ``Proxy-Authorization: Basic``); a URL without a scheme is read as
``http://``.

:func:`open_via_proxy` opens a connection the way a client behind such a proxy must: to the proxy itself,
and for an ``https`` origin through a ``CONNECT host:port`` tunnel, TLS then started inside it with the
origin's name (the proxy sees only the host and port). A plain ``http`` origin is forwarded: the client
writes its requests in absolute form (``GET http://host/path``) on the proxy connection.

Errors follow httpcore's: the proxy unreachable is ``httpx.ConnectError`` / ``httpx.ConnectTimeout``, a
tunnel the proxy refuses (any status but 2xx) or a malformed proxy answer is ``httpx.ProxyError``; in every
case nothing reached the origin.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

#: Longest proxy answer to a ``CONNECT`` (status line and headers) that is read.
MAX_CONNECT_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class Proxy:
    """One ``http://`` proxy: where it listens, and the user and password its URL carries, if any."""

    host: str
    port: int
    auth: tuple[str, str] | None = None

    @property
    def authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` value for :attr:`auth`."""
        if self.auth is None:
            return None
        return b"Basic " + base64.b64encode(":".join(self.auth).encode())

    @classmethod
    def from_url(cls, url: str, variable: str) -> Proxy:
        """Parse a proxy URL; a ``ValueError`` naming ``variable`` for one that is not ``http://``."""
        if "://" not in url:
            url = f"http://{url}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ValueError(f"{variable}: only http:// proxies are supported, not {parts.scheme}://")
        auth = None
        if parts.username is not None:
            auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        return cls(parts.hostname, parts.port or 80, auth)


@dataclass(frozen=True)
class ProxyConfig:
    """Which proxy, if any, each origin is reached through (see the module docstring)."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: str = ""

    @classmethod
    def from_environment(cls) -> ProxyConfig:
        """The machine's ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``.

        A proxy this client cannot use (``https://``, ``socks5://``) is logged as an error and its scheme's
        requests go direct, as they did before proxies were supported, rather than failing every send.
        """
        found = urllib.request.getproxies()
        every = found.get("all")
        return cls(
            http=_usable(found.get("http") or every, "HTTP_PROXY"),
            https=_usable(found.get("https") or every, "HTTPS_PROXY"),
            no_proxy=found.get("no", ""),
        )

    def __bool__(self) -> bool:
        return self.http is not None or self.https is not None

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for an origin, or ``None`` to connect directly (no proxy for its scheme, or ``NO_PROXY``)."""
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if proxy is None:
            return None
        if self.no_proxy and bypassed(self.no_proxy, host, port):
            return None
        return proxy


def _usable(url: str | None, variable: str) -> Proxy | None:
    if not url:
        return None
    try:
        return Proxy.from_url(url, variable)
    except ValueError as exc:
        logger.error("%s; those requests go direct", exc)
        return None


_WITH_PORT = re.compile(r"(\[[^\]]+\]|[^:]+):(\d+)")


def bypassed(no_proxy: str, host: str, port: int) -> bool:
    """Whether ``NO_PROXY`` covers ``host:port``: ``*``, or an entry naming the host or a parent domain
    (``example.com``, ``.example.com`` and ``*.example.com`` alike), with ``:port`` only that port; an IPv6
    address in brackets when it has a port."""
    host = host.lower().strip("[]")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        name, entry_port = entry, None
        if match := _WITH_PORT.fullmatch(entry):
            name, entry_port = match.group(1), int(match.group(2))
        name = name.removeprefix("*").removeprefix(".").strip("[]")
        if name and (entry_port is None or entry_port == port) and (host == name or host.endswith(f".{name}")):
            return True
    return False


class _TunnelProtocol(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT`` (its head only: a 2xx has no body) into a future."""

    def __init__(self, answered: asyncio.Future[bytes]) -> None:
        self.answered = answered
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.answered.done():
            return
        if b"\r\n\r\n" in self.buffer:
            self.answered.set_result(self.buffer)
        elif len(self.buffer) > MAX_CONNECT_HEAD_BYTES:
            self.answered.set_result(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_result(self.buffer)


async def open_via_proxy(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    proxy: Proxy,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    request: httpx.Request,
) -> asyncio.Protocol:
    """A connection to ``host:port`` through ``proxy``: the protocol ``factory()`` made, attached.

    Without ``tls`` the connection is to the proxy (the caller forwards absolute-form requests on it); with
    it, a ``CONNECT`` tunnel is opened and TLS started inside it, verified against ``tls`` for ``host``. The
    caller bounds the time (the connect timeout); ``OSError`` (proxy unreachable, TLS failure) propagates.
    """
    if tls is None:
        _, protocol = await loop.create_connection(factory, proxy.host, proxy.port)
        return protocol
    answered: asyncio.Future[bytes] = loop.create_future()
    raw, tunnel = await loop.create_connection(lambda: _TunnelProtocol(answered), proxy.host, proxy.port)
    try:
        target = f"{host}:{port}".encode("ascii") if ":" not in host else f"[{host}]:{port}".encode("ascii")
        head = b"CONNECT %b HTTP/1.1\r\nHost: %b\r\n" % (target, target)
        if proxy.authorization is not None:
            head += b"Proxy-Authorization: %b\r\n" % proxy.authorization
        raw.write(head + b"\r\n")
        answer = await answered
        status_line = answer.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.ProxyError(f"The proxy answered CONNECT with {status_line[:80]!r}.", request=request)
        if not 200 <= int(parts[1]) < 300:
            reason = status_line.decode("latin-1", errors="replace")
            raise httpx.ProxyError(f"The proxy refused the tunnel to {host}:{port}: {reason}", request=request)
        if answer.index(b"\r\n\r\n") + 4 != len(answer):
            raise httpx.ProxyError("The proxy sent bytes after its CONNECT answer.", request=request)
        secured = await loop.start_tls(raw, tunnel, tls, server_hostname=host)
    except BaseException:
        raw.abort()
        raise
    if secured is None:  # pragma: no cover - only for a transport that cannot start TLS
        raw.abort()
        raise httpx.ProxyError("TLS could not be started inside the tunnel.", request=request)
    protocol = factory()
    secured.set_protocol(protocol)
    protocol.connection_made(secured)
    return protocol
