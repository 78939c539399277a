"""The maintained transports the provider client can run on instead of :class:`~libs.providers.transport.LeanTransport`:
httpx's default one (httpcore) and ``httpx-aiohttp`` (httpx over aiohttp), chosen by ``ZAPQ_HTTP_TRANSPORT``.

Each is given what LeanTransport does itself, so that switching changes no guarantee:

* :class:`CappedTransport` reads the response whole and fails one larger than the body cap as received, or
  once its ``Content-Encoding`` is undone (a "zip bomb"), with ``httpx.RemoteProtocolError``;
* :class:`ProxyRouter` sends each origin through the proxy :class:`~libs.providers.proxies.ProxyConfig` names
  (one inner transport per proxy), or directly;
* TLS verifies against :func:`~libs.providers.trust.trust_context`.

What they cannot do: the event dispatcher's ``resolve`` (connect to the address the outbound guard checked)
and ``truncate_body`` (answer with the first bytes of an over-long body); the dispatcher stays on
LeanTransport. And their exceptions are their own: httpx-aiohttp maps aiohttp's "server disconnected" to
``httpx.ConnectTimeout`` ("nothing was sent"), so a send cut after it was written would look safe to resend
(see the README's transport figures).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

from libs.providers.decoding import check_decoded_size
from libs.providers.proxies import Proxy, ProxyConfig


class CappedTransport(httpx.AsyncBaseTransport):
    """``inner``'s responses read whole, failing past ``max_body_bytes`` received or ``max_decoded_bytes`` decoded."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_body_bytes: int, max_decoded_bytes: int) -> None:
        self._inner = inner
        self._max_body_bytes = max_body_bytes
        self._max_decoded_bytes = max_decoded_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The response with its body read (and checked)."""
        response = await self._inner.handle_async_request(request)
        chunks: list[bytes] = []
        size = 0
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        try:
            async for chunk in stream:
                size += len(chunk)
                if size > self._max_body_bytes:
                    raise httpx.RemoteProtocolError(
                        f"Response body exceeds {self._max_body_bytes} bytes.", request=request
                    )
                chunks.append(chunk)
        finally:
            await stream.aclose()
        body = b"".join(chunks)
        check_decoded_size(list(response.headers.raw), body, self._max_decoded_bytes, request)
        return httpx.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


class ProxyRouter(httpx.AsyncBaseTransport):
    """Each request to the transport for its origin's proxy (``build(proxy)``, made on first use) or the direct one."""

    def __init__(self, proxies: ProxyConfig, build: Callable[[Proxy | None], httpx.AsyncBaseTransport]) -> None:
        self._proxies = proxies
        self._build = build
        self._direct = build(None)
        self._proxied: dict[Proxy, httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Route ``request``."""
        url = request.url
        proxy = self._proxies.proxy_for(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        if proxy is None:
            return await self._direct.handle_async_request(request)
        transport = self._proxied.get(proxy)
        if transport is None:
            transport = self._proxied[proxy] = self._build(proxy)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Close every inner transport."""
        for transport in (self._direct, *self._proxied.values()):
            await transport.aclose()


def _httpx_proxy(proxy: Proxy | None) -> httpx.Proxy | None:
    if proxy is None:
        return None
    return httpx.Proxy(httpx.URL(scheme="http", host=proxy.host, port=proxy.port), auth=proxy.auth)


def maintained_transport(
    kind: str,
    *,
    max_connections: int,
    keepalive_expiry: float,
    max_body_bytes: int,
    max_decoded_bytes: int,
    proxies: ProxyConfig,
    ssl_context: ssl.SSLContext,
) -> httpx.AsyncBaseTransport:
    """httpx's default transport (``kind="httpx"``) or httpx-aiohttp's (``"aiohttp"``), capped, routed, verified."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=keepalive_expiry
    )

    def build(proxy: Proxy | None) -> httpx.AsyncBaseTransport:
        if kind == "httpx":
            return httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, proxy=_httpx_proxy(proxy))
        if kind == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return AiohttpTransport(verify=ssl_context, limits=limits, proxy=_httpx_proxy(proxy))
        raise ValueError(f"unknown HTTP transport {kind!r}: use lean, aiohttp or httpx")

    return CappedTransport(
        ProxyRouter(proxies, build), max_body_bytes=max_body_bytes, max_decoded_bytes=max_decoded_bytes
    )
