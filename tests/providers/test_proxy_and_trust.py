"""The provider HTTP client behind a proxy (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``) and with the system
trust store (``SSL_CERT_FILE``), over each transport ``ZAPQ_HTTP_TRANSPORT`` can pick.

The proxy is real, on 127.0.0.1 (:class:`ForwardProxy`): it opens ``CONNECT`` tunnels and forwards absolute-form
requests, logging each request line it reads. The origin is the raw server of ``test_transport.py``, over TLS
with a self-signed certificate that only ``SSL_CERT_FILE`` makes trusted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

from libs.providers import trust
from libs.providers.transport import provider_http_client
from libs.settings import HttpTransport
from tests.providers.test_transport import BOUND, OK, answer, certificate, raw_server  # noqa: F401 - a fixture

pytestmark = pytest.mark.anyio

TIMEOUT = httpx.Timeout(BOUND)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


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


@pytest.fixture(params=["lean", "aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> HttpTransport:
    """The transport under the provider client (``ZAPQ_HTTP_TRANSPORT``)."""
    kind: HttpTransport = request.param
    return kind


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable from the machine's environment (upper or lower case) leaks into a test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class ForwardProxy:
    """An HTTP forward proxy: ``CONNECT host:port`` tunnels, other requests forwarded as they came (absolute
    form) to the host they name; then bytes are piped both ways until either side closes.

    ``lines`` holds each request line read (one per client connection), ``credentials`` each
    ``Proxy-Authorization`` value (``None`` when absent); ``refuse``, when set, is sent instead of a tunnel.
    """

    def __init__(self, refuse: bytes | None = None) -> None:
        self.refuse = refuse
        self.url = ""
        self.lines: list[bytes] = []
        self.credentials: list[bytes | None] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The ``asyncio.start_server`` callback."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *headers = head.split(b"\r\n")
            self.lines.append(request_line)
            found = [h.split(b":", 1)[1].strip() for h in headers if h.lower().startswith(b"proxy-authorization:")]
            self.credentials.append(found[0] if found else None)
            if self.refuse is not None:
                writer.write(self.refuse)
                return
            method, target, _ = request_line.split(b" ")
            if method == b"CONNECT":
                host, port = target.decode().rsplit(":", 1)
                up_reader, upstream = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urllib.parse.urlsplit(target.decode())
                up_reader, upstream = await asyncio.open_connection(parts.hostname, parts.port or 80)
                upstream.write(head)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()
            self.tasks.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(OSError):
            sink.write_eof()


@contextlib.asynccontextmanager
async def forward_proxy(refuse: bytes | None = None) -> AsyncIterator[ForwardProxy]:
    """A :class:`ForwardProxy` on a free 127.0.0.1 port."""
    proxy = ForwardProxy(refuse)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy.tasks):
            task.cancel()
        await asyncio.gather(*proxy.tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
def tls_server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:  # noqa: F811 - the fixture
    """The origin's TLS context: the self-signed certificate for 127.0.0.1."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811 - the fixture
    """``SSL_CERT_FILE`` names the self-signed certificate (as an operator installs a corporate CA)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    return certificate[0]


def origin_of(url: str) -> bytes:
    """``127.0.0.1:PORT`` of a server URL."""
    return url.split("://", 1)[1].encode()


# --- proxies --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("trusted")
async def test_https_goes_through_a_connect_tunnel_to_an_origin_trusted_by_ssl_cert_file(
    transport: HttpTransport, tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with raw_server(answer(OK), ssl=tls_server_context) as server, forward_proxy() as proxy:
        # Given HTTPS_PROXY names the proxy
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        # When the provider client makes two requests to the https origin
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            for _ in range(2):
                response = await client.get(f"{server.url}/messages")
                assert (response.status_code, response.content) == (200, b"ok")
        # Then both went through one CONNECT tunnel (TLS end to end inside it), on one kept-alive connection
        assert proxy.lines == [b"CONNECT %b HTTP/1.1" % origin_of(server.url)]
        assert server.log == [(0, b"/messages"), (0, b"/messages")]


async def test_http_is_forwarded_in_absolute_form(transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    async with raw_server(answer(OK)) as server, forward_proxy() as proxy:
        # Given HTTP_PROXY names the proxy
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        # When the provider client posts to an http origin
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            response = await client.post(f"{server.url}/v21.0/1/messages", json={"to": "+1"})
        # Then the proxy got it in absolute form and forwarded it
        assert response.content == b"ok"
        absolute = f"{server.url}/v21.0/1/messages".encode()
        assert proxy.lines == [b"POST %b HTTP/1.1" % absolute]
        assert server.log == [(0, absolute)]


async def test_proxy_credentials_from_the_url_are_sent_to_the_proxy_only(
    transport: HttpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with raw_server(answer(OK)) as server, forward_proxy() as proxy:
        # Given the proxy URL carries a user and a (percent-encoded) password
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://zapq:p%40ss@"))
        # When a request goes through it
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            assert (await client.get(f"{server.url}/x")).content == b"ok"
        # Then the proxy saw Basic credentials
        assert proxy.credentials == [b"Basic " + base64.b64encode(b"zapq:p@ss")]


async def test_no_proxy_hosts_are_reached_directly(transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    async with raw_server(answer(OK)) as server, forward_proxy() as proxy:
        # Given both proxy variables, and NO_PROXY naming the origin's host
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        # When the provider client calls it
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            assert (await client.get(f"{server.url}/direct")).content == b"ok"
        # Then the proxy saw nothing
        assert proxy.lines == []
        assert server.log == [(0, b"/direct")]


async def test_a_refused_tunnel_is_a_proxy_error_and_nothing_reaches_the_origin(
    tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(answer(OK), ssl=tls_server_context) as server, forward_proxy(refusal) as proxy:
        # Given a proxy that refuses the tunnel
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        # When the provider client (LeanTransport) calls the https origin through it
        async with provider_http_client(timeout=TIMEOUT) as client:
            with pytest.raises(httpx.ProxyError, match="407 Proxy Authentication Required"):
                await client.get(f"{server.url}/never")
        # Then the origin never saw a connection
        assert proxy.lines == [b"CONNECT %b HTTP/1.1" % origin_of(server.url)]
        assert server.accepted == 0


async def test_an_unreachable_proxy_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async with forward_proxy() as proxy:
        gone = proxy.url
    async with raw_server(answer(OK)) as server:
        # Given HTTP_PROXY names a port nobody listens on (the origin itself is up)
        monkeypatch.setenv("HTTP_PROXY", gone)
        async with provider_http_client(timeout=TIMEOUT) as client:
            # Then a request is a ConnectError (nothing was sent), not a request around the proxy
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{server.url}/never")
        assert server.accepted == 0


async def test_the_event_dispatchers_guarded_client_ignores_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> str:
        resolved.append((host, port))
        return host

    async with raw_server(answer(OK)) as server, forward_proxy() as proxy:
        # Given HTTP_PROXY, and a client built as the dispatcher builds it (the address guard's resolve)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with provider_http_client(timeout=TIMEOUT, truncate_body=True, resolve=resolve) as client:
            assert (await client.get(f"{server.url}/endpoint")).content == b"ok"
        # Then it connected to the address the guard checked, not through the proxy
        assert proxy.lines == []
        assert resolved == [("127.0.0.1", int(server.url.rsplit(":", 1)[1]))]


async def test_an_unsupported_proxy_is_logged_and_its_requests_go_direct(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw_server(answer(OK)) as server:
        # Given HTTP_PROXY is a SOCKS proxy, which the client cannot use
        monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
        # When the client is built and used
        async with provider_http_client(timeout=TIMEOUT) as client:
            assert (await client.get(f"{server.url}/direct")).content == b"ok"
    # Then the request went direct (as before proxies were supported), and the error names the variable
    assert server.log == [(0, b"/direct")]
    assert "HTTP_PROXY: only http:// proxies are supported, not socks5://" in caplog.text


# --- trust store ----------------------------------------------------------------------------------------


async def test_a_ca_named_by_ssl_cert_file_is_trusted_and_others_are_not(
    transport: HttpTransport,
    tls_server_context: ssl.SSLContext,
    certificate: tuple[Path, Path],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with raw_server(answer(OK), ssl=tls_server_context) as server:
        # Given SSL_CERT_FILE names certifi's bundle (not the self-signed certificate)
        monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            # Then the origin is refused, before anything is sent (httpx-aiohttp calls that a ConnectTimeout)
            with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)):
                await client.get(f"{server.url}/refused")
        # Given SSL_CERT_FILE names the self-signed certificate, as an operator installs a corporate CA
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        async with provider_http_client(timeout=TIMEOUT, transport=transport) as client:
            # Then the origin is trusted
            assert (await client.get(f"{server.url}/trusted")).content == b"ok"
        assert [target for _, target in server.log] == [b"/trusted"]


@contextlib.contextmanager
def no_system_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """OpenSSL's default CA file missing and its CA directory empty, as in a slim image without a CA package."""
    empty = tmp_path / "certs"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    yield


def serials(context: ssl.SSLContext) -> set[str]:
    """The serial numbers of the CA certificates ``context`` trusts (loaded from files)."""
    return {str(cert["serialNumber"]) for cert in context.get_ca_certs()}


def test_without_a_system_store_the_distribution_bundle_then_certifi_is_trusted(
    certificate: tuple[Path, Path],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with no_system_store(monkeypatch, tmp_path):
        assert not trust.openssl_defaults_usable()
        # Given a distribution bundle where truststore looks for one: it is trusted
        monkeypatch.setattr(trust, "CA_FILE_CANDIDATES", (str(tmp_path / "none.pem"), str(certificate[0])))
        assert serials(trust.trust_context()) == serials(ssl.create_default_context(cafile=str(certificate[0])))
        # Given none at all: certifi's bundle is
        monkeypatch.setattr(trust, "CA_FILE_CANDIDATES", ())
        certifi_serials = serials(ssl.create_default_context(cafile=certifi.where()))
        assert certifi_serials and serials(trust.trust_context()) == certifi_serials
