"""Fixtures: the fake Meta API and fake Evolution API on real 127.0.0.1 ports, reset before every test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from libs.providers import BaileysBridgeClient, MetaCloudClient
from libs.providers.transport import provider_http_client
from tests.fakes import evolution, meta
from tests.fakes.server import running_app

META_TOKEN = "test-meta-token"
PHONE_NUMBER_ID = "106540352242922"
EVOLUTION_KEY = "test-evolution-key"
INSTANCE = "zapq-test"


@pytest.fixture
def anyio_backend() -> str:
    """Run the async tests on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def meta_server() -> Iterator[str]:
    """One fake Meta API for the session (default 80/s per number, no pair limit)."""
    with running_app(meta.create_app(meta.MetaFakeConfig(valid_tokens=[META_TOKEN]))) as url:
        yield url


@pytest.fixture(scope="session")
def evolution_server() -> Iterator[str]:
    """One fake Evolution API for the session with a single open instance."""
    config = evolution.EvolutionFakeConfig(api_keys=[EVOLUTION_KEY], instances={INSTANCE: "open"})
    with running_app(evolution.create_app(config)) as url:
        yield url


@pytest.fixture
def meta_url(meta_server: str) -> str:
    """The fake Meta API's base URL, reset to its start-up state."""
    httpx.post(f"{meta_server}/_fake/reset").raise_for_status()
    return meta_server


@pytest.fixture
def evolution_url(evolution_server: str) -> str:
    """The fake Evolution API's base URL, reset to its start-up state."""
    httpx.post(f"{evolution_server}/_fake/reset").raise_for_status()
    return evolution_server


@pytest.fixture(params=["httpx-default", "lean"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client handed to the provider clients, with explicit timeouts.

    Every test using it runs twice: over httpx's default transport and over ``provider_http_client``
    (``LeanTransport``), the client the sender is moving to.
    """
    timeout = httpx.Timeout(5.0, connect=2.0)
    lean = request.param == "lean"
    async with provider_http_client(timeout=timeout) if lean else httpx.AsyncClient(timeout=timeout) as client:
        yield client


def configure(base_url: str, **changes: Any) -> dict[str, Any]:
    """Change a fake's settings through ``POST /_fake/config`` (``forced_errors`` are queued)."""
    response = httpx.post(f"{base_url}/_fake/config", json=changes)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def recorded_sends(base_url: str) -> list[dict[str, Any]]:
    """What the fake accepted, from ``GET /_fake/sends``."""
    response = httpx.get(f"{base_url}/_fake/sends")
    response.raise_for_status()
    sends: list[dict[str, Any]] = response.json()
    return sends


def meta_client(http: httpx.AsyncClient, url: str, *, token: str = META_TOKEN) -> MetaCloudClient:
    """A Meta client for the fake's phone number."""
    return MetaCloudClient(
        http, graph_url=url, api_version="v21.0", phone_number_id=PHONE_NUMBER_ID, access_token=token
    )


def bridge(
    http: httpx.AsyncClient, url: str, *, key: str = EVOLUTION_KEY, instance: str = INSTANCE
) -> BaileysBridgeClient:
    """A bridge client for the fake's instance."""
    return BaileysBridgeClient(http, base_url=url, instance=instance, api_key=key)
