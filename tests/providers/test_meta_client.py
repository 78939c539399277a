"""``MetaCloudClient`` against the fake Meta API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from libs.errors import (
    ConnectionNeedsAttentionError,
    InvalidRecipientError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTimeoutError,
    ProviderTransientError,
    TemplateError,
)
from libs.ops.processes import free_port
from libs.providers import MetaCloudClient, OutboundTemplate, OutboundText, Provider
from tests.providers.conftest import PHONE_NUMBER_ID, configure, meta_client, recorded_sends

pytestmark = pytest.mark.anyio

TEXT = OutboundText(to="+16505551234", body="olá, pedido 42", client_ref="msg-0001")


async def test_text_send_returns_the_wamid_and_carries_our_ref(http: httpx.AsyncClient, meta_url: str) -> None:
    # Given a client for the fake
    client: Provider = meta_client(http, meta_url)
    # When a text replying to an earlier message is sent
    message = OutboundText(to="+16505551234", body="olá", reply_to="wamid.EARLIER", client_ref="msg-0001")
    result = await client.send(message)
    # Then the wamid is parsed and the fake recorded the exact wire payload of doc section B1
    assert result.external_id.startswith("wamid.")
    assert result.wa_id == "16505551234"
    [sent] = recorded_sends(meta_url)
    assert sent["wamid"] == result.external_id
    assert (sent["phone_number_id"], sent["to"], sent["body"]) == (PHONE_NUMBER_ID, "+16505551234", "olá")
    assert sent["client_ref"] == "msg-0001" and sent["reply_to"] == "wamid.EARLIER"
    assert sent["payload"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "olá"},
        "context": {"message_id": "wamid.EARLIER"},
        "biz_opaque_callback_data": "msg-0001",
    }


async def test_template_send(http: httpx.AsyncClient, meta_url: str) -> None:
    components = [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]
    message = OutboundTemplate(
        to="16505551234", name="order_update", language="en_US", components=components, client_ref="msg-2"
    )
    result = await meta_client(http, meta_url).send(message)
    assert result.external_id.startswith("wamid.") and result.provider_status == "accepted"
    [sent] = recorded_sends(meta_url)
    assert sent["template"] == {"name": "order_update", "language": {"code": "en_US"}, "components": components}
    assert sent["payload"]["type"] == "template" and sent["client_ref"] == "msg-2"
    assert "context" not in sent["payload"]


async def test_bad_token_needs_attention_and_never_leaks_the_token(http: httpx.AsyncClient, meta_url: str) -> None:
    secret = "EAAG-not-a-valid-token-0123456789"
    client = meta_client(http, meta_url, token=secret)
    with pytest.raises(ConnectionNeedsAttentionError) as caught:
        await client.send(TEXT)
    assert (caught.value.code, caught.value.http_status) == (190, 401)
    assert secret not in str(caught.value) and secret not in caught.value.details
    assert secret not in repr(client)
    assert recorded_sends(meta_url) == []


@pytest.mark.parametrize(
    ("forced", "expected", "code"),
    [
        (130429, ProviderRateLimited, 130429),
        (131026, InvalidRecipientError, 131026),
        (132001, TemplateError, 132001),
        (131047, InvalidRecipientError, 131047),
        (100, ProviderPermanentError, 100),
        (368, ConnectionNeedsAttentionError, 368),
        (2, ProviderTransientError, 2),
        ({"code": 131000, "http_status": 500}, ProviderTransientError, 131000),
        ({"code": 4, "http_status": 429}, ProviderRateLimited, 4),
        ({"http_status": 502, "raw": "<html>Bad Gateway</html>"}, ProviderTransientError, None),
        ({"http_status": 401, "raw": ""}, ConnectionNeedsAttentionError, None),
    ],
)
async def test_forced_errors_are_mapped(
    http: httpx.AsyncClient, meta_url: str, forced: object, expected: type[Exception], code: int | None
) -> None:
    configure(meta_url, forced_errors=[forced])
    with pytest.raises(expected) as caught:
        await meta_client(http, meta_url).send(TEXT)
    assert type(caught.value) is expected
    assert getattr(caught.value, "code", None) == code
    assert recorded_sends(meta_url) == []


async def test_throughput_limit_defers_for_a_second(http: httpx.AsyncClient, meta_url: str) -> None:
    configure(meta_url, forced_errors=[130429])
    with pytest.raises(ProviderRateLimited) as caught:
        await meta_client(http, meta_url).send(TEXT)
    assert caught.value.delay_ms == 1_000


async def test_pair_limit_defers_4_to_the_pair_hits(http: httpx.AsyncClient, meta_url: str) -> None:
    configure(meta_url, forced_errors=[131056])
    with pytest.raises(ProviderRateLimited) as caught:
        await meta_client(http, meta_url).send(TEXT, pair_hits=2)
    assert (caught.value.code, caught.value.delay_ms) == (131056, 16_000)


async def test_random_500s_are_transient(http: httpx.AsyncClient, meta_url: str) -> None:
    configure(meta_url, error_rate=1.0)
    with pytest.raises(ProviderTransientError) as caught:
        await meta_client(http, meta_url).send(TEXT)
    assert (caught.value.code, caught.value.http_status) == (131000, 500)


async def test_server_hanging_is_a_timeout(meta_url: str) -> None:
    configure(meta_url, forced_errors=["timeout"])
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.3)) as http:
        with pytest.raises(ProviderTimeoutError) as caught:
            await meta_client(http, meta_url).send(TEXT)
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert caught.value.provider == "meta"


async def test_server_closing_the_connection_is_transient(http: httpx.AsyncClient, meta_url: str) -> None:
    configure(meta_url, forced_errors=["close"])
    with pytest.raises(ProviderTransientError) as caught:
        await meta_client(http, meta_url).send(TEXT)
    assert not isinstance(caught.value, ProviderTimeoutError)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    # And the next send on the same client works again
    assert (await meta_client(http, meta_url).send(TEXT)).external_id.startswith("wamid.")


async def test_nothing_listening_is_transient(http: httpx.AsyncClient) -> None:
    client = meta_client(http, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderTransientError) as caught:
        await client.send(TEXT)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_over_long_body_is_refused_by_the_fake_as_bad_parameter(http: httpx.AsyncClient, meta_url: str) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await meta_client(http, meta_url).send(OutboundText(to="+16505551234", body="x" * 4097))
    assert (type(caught.value), caught.value.code) == (ProviderPermanentError, 100)
    assert "4096" in caught.value.details


async def test_constructor_rejects_bad_settings(http: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="api_version"):
        MetaCloudClient(http, graph_url="x", api_version="21", phone_number_id="1", access_token="t")
    with pytest.raises(ValueError, match="access_token"):
        MetaCloudClient(http, graph_url="x", api_version="v21.0", phone_number_id="1", access_token="")
