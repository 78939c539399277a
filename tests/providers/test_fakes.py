"""The fakes themselves: Meta's per-number and pair limits, signed status webhooks, bridge webhooks, CLIs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Iterator

import httpx
import pytest

from libs.errors import ProviderRateLimited
from libs.providers import BaileysBridgeClient, MetaCloudClient, OutboundText, SendResult
from tests.fakes.common import SlidingWindow
from tests.fakes.receiver import WebhookReceiver
from tests.fakes.server import running_app, running_module
from tests.providers.conftest import (
    INSTANCE,
    META_TOKEN,
    PHONE_NUMBER_ID,
    bridge,
    configure,
    meta_client,
    recorded_sends,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    """A webhook receiver on its own port, with its base URL."""
    hook = WebhookReceiver()
    with running_app(hook.app) as url:
        yield hook, url


def test_sliding_window_counts_only_the_last_window() -> None:
    window = SlidingWindow()
    assert [window.hit("n", limit=2, window_s=1.0, now=t) for t in (0.0, 0.1, 0.2)] == [True, True, False]
    assert window.hit("other", limit=2, window_s=1.0, now=0.3)
    assert not window.hit("n", limit=2, window_s=1.0, now=0.99)
    assert window.hit("n", limit=2, window_s=1.0, now=1.05)  # the 0.0 event has left the window


async def test_per_number_rate_limit_answers_130429(http: httpx.AsyncClient, meta_url: str) -> None:
    # Given 5 sends allowed per window (a long window keeps the test independent of machine speed)
    configure(meta_url, rate_per_second=5, rate_window_s=60)
    client = meta_client(http, meta_url)
    # When 8 sends go out at once for one number
    outcomes = await asyncio.gather(
        *(client.send(OutboundText(to=f"+1650555{i:04d}", body="hi")) for i in range(8)), return_exceptions=True
    )
    # Then 5 are accepted and 3 deferred with 130429
    accepted = [o for o in outcomes if isinstance(o, SendResult)]
    limited = [o for o in outcomes if isinstance(o, ProviderRateLimited)]
    assert (len(accepted), len(limited)) == (5, 3)
    assert {(e.code, e.delay_ms) for e in limited} == {(130429, 1_000)}
    assert len(recorded_sends(meta_url)) == 5
    # And another phone number of the same business has its own budget
    other = MetaCloudClient(
        http, graph_url=meta_url, api_version="v21.0", phone_number_id="999", access_token=META_TOKEN
    )
    assert (await other.send(OutboundText(to="+16505550000", body="hi"))).external_id


async def test_default_rate_is_80_per_second(meta_url: str) -> None:
    config = httpx.get(f"{meta_url}/_fake/config").json()
    assert (config["rate_per_second"], config["rate_window_s"], config["pair_limit"]) == (80, 1.0, None)


async def test_pair_limit_answers_131056_for_that_recipient_only(http: httpx.AsyncClient, meta_url: str) -> None:
    configure(meta_url, pair_limit=2, pair_window_s=60)
    client = meta_client(http, meta_url)
    ana, bob = OutboundText(to="+16505551111", body="1"), OutboundText(to="+16505552222", body="1")
    await client.send(ana)
    await client.send(ana)
    with pytest.raises(ProviderRateLimited) as caught:
        await client.send(ana, pair_hits=1)
    assert (caught.value.code, caught.value.delay_ms) == (131056, 4_000)
    assert (await client.send(bob)).external_id
    assert [s["to"] for s in recorded_sends(meta_url)] == [ana.to, ana.to, bob.to]


async def test_status_webhooks_are_signed_over_the_exact_bytes(
    http: httpx.AsyncClient, meta_url: str, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, hook_url = receiver
    secret = "app-secret-ü"
    configure(meta_url, webhook_url=f"{hook_url}/webhooks/meta", app_secret=secret)
    # When a message carrying a non-ASCII client ref is accepted
    result = await meta_client(http, meta_url).send(OutboundText(to="+16505551234", body="hi", client_ref="réf-1"))
    # Then sent, delivered and read arrive, each signed with HMAC-SHA256 of the raw body
    statuses = []
    for _ in range(3):
        posted = await hook.aget(timeout=10)
        expected = hmac.new(secret.encode(), posted.body, hashlib.sha256).hexdigest()
        assert posted.path == "/webhooks/meta"
        assert posted.headers["content-type"] == "application/json"
        assert hmac.compare_digest(posted.headers["x-hub-signature-256"], f"sha256={expected}")
        assert b"\\u00e9" in posted.body and posted.body.isascii()  # ensure_ascii serialisation
        payload = json.loads(posted.body)
        assert payload["object"] == "whatsapp_business_account"
        [entry] = payload["entry"]
        [change] = entry["changes"]
        assert change["field"] == "messages"
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        assert value["metadata"]["phone_number_id"] == PHONE_NUMBER_ID
        [status] = value["statuses"]
        assert (status["id"], status["recipient_id"]) == (result.external_id, "16505551234")
        assert status["biz_opaque_callback_data"] == "réf-1" and status["timestamp"].isdigit()
        statuses.append(status["status"])
    assert statuses == ["sent", "delivered", "read"]


async def test_bridge_webhooks_carry_the_shared_secret_header(
    http: httpx.AsyncClient, evolution_url: str, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, hook_url = receiver
    configure(evolution_url, webhook_url=f"{hook_url}/webhooks/baileys", webhook_headers={"X-Bridge-Secret": "s3"})
    result = await bridge(http, evolution_url).send(OutboundText(to="5511999999999", body="oi"))
    events = [await hook.aget(timeout=10) for _ in range(3)]
    assert {e.headers["x-bridge-secret"] for e in events} == {"s3"}
    bodies = [json.loads(e.body) for e in events]
    assert {(b["event"], b["instance"], b["data"]["keyId"]) for b in bodies} == {
        ("messages.update", INSTANCE, result.external_id)
    }
    assert [b["data"]["status"] for b in bodies] == ["SERVER_ACK", "DELIVERY_ACK", "READ"]
    assert bodies[0]["data"]["remoteJid"] == "5511999999999@s.whatsapp.net"


async def test_reset_and_bad_settings(meta_url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{meta_url}/_fake/config", json={"no_such_setting": 1})
        assert response.status_code == 400
        configure(meta_url, latency_ms=5, forced_errors=[131026])
        assert httpx.get(f"{meta_url}/_fake/config").json()["forced_errors"] == [131026]
        await http.post(f"{meta_url}/_fake/reset")
        config = httpx.get(f"{meta_url}/_fake/config").json()
        assert (config["latency_ms"], config["forced_errors"]) == (0.0, [])


async def test_meta_fake_runs_from_the_command_line(receiver: tuple[WebhookReceiver, str]) -> None:
    hook, hook_url = receiver
    args = ["--token", "cli-token", "--app-secret", "S", "--webhook-url", f"{hook_url}/webhooks/meta"]
    with running_module("tests.fakes.meta", args) as url:
        async with httpx.AsyncClient(timeout=5) as http:
            client = MetaCloudClient(
                http, graph_url=url, api_version="v21.0", phone_number_id="1", access_token="cli-token"
            )
            result = await client.send(OutboundText(to="+16505551234", body="hi", client_ref="c1"))
        posted = await hook.aget(timeout=10)
        assert posted.headers["x-hub-signature-256"] == "sha256=" + hmac.new(b"S", posted.body, "sha256").hexdigest()
        assert json.loads(posted.body)["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] == result.external_id


async def test_evolution_fake_runs_from_the_command_line() -> None:
    args = ["--api-key", "k", "--instance", "inst"]
    with running_module("tests.fakes.evolution", args) as url:
        async with httpx.AsyncClient(timeout=5) as http:
            client = BaileysBridgeClient(http, base_url=url, instance="inst", api_key="k")
            assert await client.connection_state() == "open"
            assert (await client.send(OutboundText(to="5511999999999", body="oi"))).external_id
