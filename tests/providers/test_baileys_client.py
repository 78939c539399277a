"""``BaileysBridgeClient`` against the fake Evolution API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from libs.errors import (
    ConnectionNeedsAttentionError,
    InvalidRecipientError,
    ProviderPermanentError,
    ProviderTimeoutError,
    ProviderTransientError,
)
from libs.providers import OutboundTemplate, OutboundText, Provider
from tests.providers.conftest import INSTANCE, bridge, configure, recorded_sends

pytestmark = pytest.mark.anyio

TEXT = OutboundText(to="+5511999999999", body="olá", client_ref="msg-1")


async def test_send_text_returns_the_key_id(http: httpx.AsyncClient, evolution_url: str) -> None:
    # Given a client for an open instance
    client: Provider = bridge(http, evolution_url)
    # When a reply is sent
    result = await client.send(OutboundText(to="+5511999999999", body="olá", reply_to="3EB0QUOTED"))
    # Then the Baileys key id is the external id and the fake recorded number, text and quoted id
    assert result.external_id.startswith("3EB0")
    assert (result.wa_id, result.provider_status) == ("5511999999999", "PENDING")
    [sent] = recorded_sends(evolution_url)
    assert (sent["instance"], sent["number"], sent["text"]) == (INSTANCE, "5511999999999", "olá")
    assert (sent["key_id"], sent["quoted_id"]) == (result.external_id, "3EB0QUOTED")


async def test_connection_state_follows_the_instance(http: httpx.AsyncClient, evolution_url: str) -> None:
    client = bridge(http, evolution_url)
    assert await client.connection_state() == "open"
    configure(evolution_url, instances={INSTANCE: "connecting"})
    assert await client.connection_state() == "connecting"
    configure(evolution_url, instances={INSTANCE: "close"})
    assert await client.connection_state() == "close"


async def test_templates_are_refused_without_a_request(http: httpx.AsyncClient, evolution_url: str) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await bridge(http, evolution_url).send(OutboundTemplate(to="5511", name="t", language="pt_BR"))
    assert type(caught.value) is ProviderPermanentError
    assert recorded_sends(evolution_url) == []


async def test_wrong_api_key_needs_attention(http: httpx.AsyncClient, evolution_url: str) -> None:
    client = bridge(http, evolution_url, key="wrong-key-9876")
    for call in (client.send(TEXT), client.connection_state()):
        with pytest.raises(ConnectionNeedsAttentionError) as caught:
            await call
        assert caught.value.http_status == 401 and "wrong-key-9876" not in str(caught.value)
    assert "wrong-key-9876" not in repr(client)


async def test_unknown_instance_needs_attention(http: httpx.AsyncClient, evolution_url: str) -> None:
    with pytest.raises(ConnectionNeedsAttentionError) as caught:
        await bridge(http, evolution_url, instance="ghost").send(TEXT)
    assert caught.value.http_status == 404


async def test_number_not_on_whatsapp_is_an_invalid_recipient(http: httpx.AsyncClient, evolution_url: str) -> None:
    configure(evolution_url, not_on_whatsapp=["5511999999999"])
    with pytest.raises(InvalidRecipientError) as caught:
        await bridge(http, evolution_url).send(TEXT)
    assert caught.value.http_status == 400 and "5511999999999" in str(caught.value)


async def test_empty_text_is_permanent_not_invalid_recipient(http: httpx.AsyncClient, evolution_url: str) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await bridge(http, evolution_url).send(OutboundText(to="5511999999999", body=""))
    assert type(caught.value) is ProviderPermanentError


@pytest.mark.parametrize(
    ("forced", "expected"),
    [(500, ProviderTransientError), (503, ProviderTransientError), ("close", ProviderTransientError)],
)
async def test_server_failures_are_transient(
    http: httpx.AsyncClient, evolution_url: str, forced: object, expected: type[Exception]
) -> None:
    configure(evolution_url, forced_errors=[forced])
    with pytest.raises(expected) as caught:
        await bridge(http, evolution_url).send(TEXT)
    assert type(caught.value) is expected


async def test_hanging_bridge_is_a_timeout(evolution_url: str) -> None:
    configure(evolution_url, forced_errors=["timeout"])
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3)) as http:
        with pytest.raises(ProviderTimeoutError) as caught:
            await bridge(http, evolution_url).send(TEXT)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
