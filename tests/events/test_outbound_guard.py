"""The outbound address guard: in prod an endpoint may not point into zapq's own network — checked when it
is saved and again when a delivery connects (so a DNS answer that changes in between cannot slip through)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.events import dispatch, signing
from libs.events.runtime import endpoint_http_client
from libs.outbound import AddressGuard, BlockedAddressError
from libs.settings import Settings
from tests.fakes.crm import CrmReceiver
from tests.fakes.server import running_app

PROD = AddressGuard.for_environment("prod")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/zapq", "only https"),
        ("https://127.0.0.1/hook", "private or reserved"),
        ("https://169.254.169.254/latest/meta-data", "private or reserved"),
        ("https://10.1.2.3/hook", "private or reserved"),
        ("https://192.168.0.10:8443/hook", "private or reserved"),
        ("https://[::1]/hook", "private or reserved"),
        ("https://[::ffff:127.0.0.1]/hook", "private or reserved"),
        ("https://[fd00::1]/hook", "private or reserved"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("ftp://hooks.example.com/", "https://"),
        ("https:///nohost", "no host"),
    ],
)
def test_prod_refuses_urls_into_private_ranges(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        PROD.check_url(url)


def test_prod_accepts_public_https_and_what_the_allowlist_names() -> None:
    PROD.check_url("https://93.184.216.34/hook")
    allowing = AddressGuard.for_environment("prod", ["10.0.0.0/8", "crm.internal"])
    allowing.check_url("https://10.1.2.3/hook")
    allowing.check_address("crm.internal", ipaddress.ip_address("192.168.1.1"))
    with pytest.raises(BlockedAddressError):
        allowing.check_address("other.internal", ipaddress.ip_address("192.168.1.1"))


def test_dev_allows_local_receivers() -> None:
    dev = AddressGuard.for_environment("dev")
    dev.check_url("http://127.0.0.1:18090/hook")
    assert asyncio.run(dev.resolve("localhost", 80)) == "localhost"


def test_a_name_resolving_to_loopback_is_refused_at_connect_time() -> None:
    # "localhost" is not an IP literal, so the save-time check without DNS lets it by; resolution catches it
    PROD.check_url("https://localhost/hook")
    with pytest.raises(BlockedAddressError, match="private or reserved"):
        asyncio.run(PROD.resolve("localhost", 443))
    with pytest.raises(ValueError, match="private or reserved"):
        asyncio.run(PROD.check_url_resolved("https://localhost/hook"))


def test_a_delivery_to_a_blocked_address_never_reaches_it(settings: Settings) -> None:
    # Given a receiver on loopback and the dispatcher's HTTP client as prod builds it
    receiver = CrmReceiver()
    prod = settings.model_copy(update={"env": "prod"})
    with running_app(receiver.app) as url:
        port = url.rsplit(":", 1)[1]

        async def deliver(target: str) -> dispatch.Attempt:
            http = endpoint_http_client(prod)
            try:
                body = signing.body("ping", dt.datetime.now(dt.UTC), {})
                return await dispatch.attempt(http, target, "evt_test", body, [signing.new_secret()], timeout_s=2)
            finally:
                await http.aclose()

        # When a delivery goes to its address, by name or by literal (saved before the guard, or rebound)
        by_name = asyncio.run(deliver(f"http://localhost:{port}/hook"))
        by_literal = asyncio.run(deliver(f"https://127.0.0.1:{port}/hook"))
    # Then each is a failed attempt that never connected, and the receiver saw nothing
    for result in (by_name, by_literal):
        assert result.status is None
        assert result.error is not None and "ConnectError" in result.error and "private or reserved" in result.error
    assert receiver.attempts == 0


def test_the_api_in_prod_refuses_such_endpoints(settings: Settings, db: Database, broker: Any) -> None:
    prod = settings.model_copy(update={"env": "prod"})
    with TestClient(create_app(prod)) as client:
        client.headers["authorization"] = f"Bearer {prod.api_token}"
        company = client.post("/api/companies", json={"name": "Acme"}).json()
        for url in ("http://127.0.0.1:9/hook", "https://169.254.169.254/x", "https://localhost/hook"):
            response = client.post("/api/webhook-endpoints", json={"company_id": company["id"], "url": url})
            assert response.status_code == 422, url
            assert response.json()["error"].startswith("url: ")
        bad_types = client.post(
            "/api/webhook-endpoints",
            json={"company_id": company["id"], "url": "https://93.184.216.34/h", "event_types": ["message.nope"]},
        )
        assert bad_types.status_code == 422
        assert "unknown event type" in bad_types.json()["error"]
