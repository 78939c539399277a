"""``ZAPQ_HTTP_TRANSPORT``: every transport the provider client can run on sends, and keeps the body caps.

LeanTransport is the default; httpx's default transport and httpx-aiohttp are wrapped to cap a response body
as received and once decoded, as LeanTransport does (``tests/providers/test_transport.py`` covers it alone).
"""

from __future__ import annotations

import gzip

import httpx
import pytest

from libs.providers import OutboundText
from libs.providers.transport import DEFAULT_MAX_DECODED_BYTES, provider_http_client
from libs.settings import HttpTransport, SettingsError, load_settings
from tests.providers.conftest import meta_client, recorded_sends
from tests.providers.test_transport import Peer, raw_server, reply

pytestmark = pytest.mark.anyio

TIMEOUT = httpx.Timeout(5.0)


@pytest.fixture(params=["lean", "aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> HttpTransport:
    """The transport under the provider client."""
    kind: HttpTransport = request.param
    return kind


async def test_every_transport_sends_through_the_fake_meta_api(transport: HttpTransport, meta_url: str) -> None:
    # Given the provider client over the transport
    async with provider_http_client(timeout=TIMEOUT, transport=transport) as http:
        client = meta_client(http, meta_url)
        # When a text is sent three times over its kept-alive connections
        results = [await client.send(OutboundText(to="+16505551234", body=f"olá {n}")) for n in range(3)]
    # Then the fake accepted each, and each answer was read
    assert all(result.external_id.startswith("wamid.") for result in results)
    assert len(recorded_sends(meta_url)) == 3


async def test_every_transport_caps_the_body_as_received_and_once_decoded(transport: HttpTransport) -> None:
    bomb = gzip.compress(b"\0" * (DEFAULT_MAX_DECODED_BYTES + 1))
    replies = {
        b"/long": reply(b"x" * 100_001),
        b"/bomb": reply(bomb, headers=b"Content-Encoding: gzip\r\n"),
        b"/fits": reply(b"fits"),
    }

    async def by_target(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            peer.send(replies[request.split(b" ")[1]])

    # Given a client whose body cap is 100,000 bytes, and a server answering 100,001 bytes, a gzip bomb, a body
    client = provider_http_client(timeout=TIMEOUT, transport=transport, max_body_bytes=100_000)
    async with raw_server(by_target) as server, client:
        # Then the long body fails the request
        with pytest.raises(httpx.RemoteProtocolError, match="exceeds 100000 bytes"):
            await client.get(f"{server.url}/long")
        # And the bomb, small as received, fails past the decoded cap
        assert len(bomb) < 100_000
        with pytest.raises(httpx.RemoteProtocolError, match="once decoded"):
            await client.get(f"{server.url}/bomb")
        # And a body within the caps is answered
        assert (await client.get(f"{server.url}/fits")).content == b"fits"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_only_the_lean_transport_offers_the_dispatchers_options(transport: HttpTransport) -> None:
    async def resolve(host: str, port: int) -> str:
        return host

    # Then the address guard's resolve and truncate_body are refused on a maintained transport
    with pytest.raises(ValueError, match="need the lean transport"):
        provider_http_client(timeout=TIMEOUT, transport=transport, resolve=resolve)
    with pytest.raises(ValueError, match="need the lean transport"):
        provider_http_client(timeout=TIMEOUT, transport=transport, truncate_body=True)


def test_the_transport_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given nothing set: lean
    monkeypatch.delenv("ZAPQ_HTTP_TRANSPORT", raising=False)
    assert load_settings().http_transport == "lean"
    # Given ZAPQ_HTTP_TRANSPORT=aiohttp: aiohttp
    monkeypatch.setenv("ZAPQ_HTTP_TRANSPORT", "aiohttp")
    assert load_settings().http_transport == "aiohttp"
    # Given a transport zapq does not know: refused at start-up, naming the variable
    monkeypatch.setenv("ZAPQ_HTTP_TRANSPORT", "curl")
    with pytest.raises(SettingsError, match=r"(?i)http_transport"):
        load_settings()
