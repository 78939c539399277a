"""The HTTP client of deliveries: a POST handed straight to the lean transport.

``httpx.AsyncClient`` costs about as much CPU per request as the transport under it (merging the URL with a
base URL, cookie extraction through urllib objects, auth and redirect layers, default headers), none of which a
delivery needs: endpoints get no cookies, redirects are failures, and the URL is the endpoint's own. A profile
of the dispatcher under the bench's ``events`` scenario showed the client layer at about half of each
delivery's CPU. :class:`EndpointClient` builds the ``httpx.Request`` itself (the parsed URL cached per
endpoint URL) and awaits :class:`~libs.providers.transport.LeanTransport` directly, so the transport's
guarantees stay those of every provider call: the outbound address guard at connect time, answers read up to
a cap, bounded decoding, httpx's exception types.
"""

from __future__ import annotations

from collections import OrderedDict

import httpx

from libs.providers.transport import ACCEPT_ENCODING, LeanTransport

#: Parsed URLs kept (endpoints of a busy dispatcher); the least recently used is dropped past it.
URL_CACHE = 1024


class EndpointClient:
    """POSTs to customers' endpoints over one :class:`LeanTransport` (close with :meth:`aclose`)."""

    def __init__(self, transport: LeanTransport, *, connect_timeout_s: float) -> None:
        self.transport = transport
        self.connect_timeout_s = connect_timeout_s
        self._urls: OrderedDict[str, httpx.URL] = OrderedDict()

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
            if len(self._urls) > URL_CACHE:
                self._urls.popitem(last=False)
        else:
            self._urls.move_to_end(url)
        return parsed

    async def post(self, url: str, *, content: bytes, headers: dict[str, str], timeout_s: float) -> httpx.Response:
        """POST ``content`` and return the answer with its body read (and decoded); raises what httpx raises
        (``httpx.InvalidURL`` / ``UnsupportedProtocol`` for a URL it refuses, ``TransportError`` otherwise)."""
        connect = min(self.connect_timeout_s, timeout_s)
        timeouts = {"connect": connect, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        request = httpx.Request(
            "POST",
            self._url(url),
            headers={"accept-encoding": ACCEPT_ENCODING, **headers},
            content=content,
            extensions={"timeout": timeouts},
        )
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.transport.aclose()
