"""Media fixtures: an S3-compatible store (moto's standalone server, a subprocess on a loopback port: real HTTP),
the fake providers' media endpoints, and connections whose credentials reach them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from libs.db.engine import Database, async_pool
from libs.db.models import Company, Connection, ConnectionStatus, Provider
from libs.media.fetch import FetchContext
from libs.media.runtime import media_http_client
from libs.media.storage import LocalStorage, MediaStorage, S3Storage
from libs.ops.processes import free_port
from libs.secrets import Secrets
from libs.settings import Settings
from tests.fakes.evolution import DEFAULT_API_KEY, DEFAULT_INSTANCE, EvolutionFakeConfig
from tests.fakes.evolution import create_app as create_evolution_app
from tests.fakes.meta import DEFAULT_TOKEN, MetaFakeConfig
from tests.fakes.meta import create_app as create_meta_app
from tests.fakes.server import running_app

T = TypeVar("T")
#: How long moto's server may take to answer its first request.
MOTO_START_S = 30.0


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible endpoint and a bucket created on it."""

    url: str
    bucket: str

    def storage(self, spool_dir: str) -> S3Storage:
        return S3Storage(
            url=self.url,
            bucket=self.bucket,
            region="us-east-1",
            access_key="test",
            secret_key="test",
            spool_dir=spool_dir,
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port (a subprocess), stopped at the end of the session."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + MOTO_START_S
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1.0)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3(s3_server: str, tmp_path: Any) -> Iterator[S3Endpoint]:
    """A fresh bucket on the S3 server."""
    endpoint = S3Endpoint(s3_server, f"zapq-{uuid.uuid4().hex[:12]}")
    storage = endpoint.storage(str(tmp_path / "spool"))
    storage._client.create_bucket(Bucket=endpoint.bucket)
    storage.close()
    yield endpoint


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh event loop."""
    return asyncio.run(coroutine)


@pytest.fixture(scope="session")
def meta_server() -> Iterator[str]:
    """One fake Graph API server (with its media API) for the session."""
    with running_app(create_meta_app(MetaFakeConfig())) as url:
        yield url


@pytest.fixture(scope="session")
def evolution_server() -> Iterator[str]:
    """One fake Evolution API server (with its media export) for the session."""
    with running_app(create_evolution_app(EvolutionFakeConfig())) as url:
        yield url


@pytest.fixture
def fake_meta(meta_server: str) -> str:
    """The fake Graph API with fresh defaults (5-minute URLs, no corruption)."""
    httpx.post(f"{meta_server}/_fake/reset").raise_for_status()
    httpx.post(
        f"{meta_server}/_fake/media/config", json={"url_ttl_s": 300, "corrupt_next": 0, "reset": True}
    ).raise_for_status()
    return meta_server


@pytest.fixture
def fake_evolution(evolution_server: str) -> str:
    """The fake bridge with fresh defaults."""
    httpx.post(f"{evolution_server}/_fake/reset").raise_for_status()
    return evolution_server


@dataclass(frozen=True)
class Numbers:
    """A company with a Meta connection and a Baileys connection on the fakes."""

    company_id: int
    meta_id: int
    bridge_id: int
    phone_number_id: str


def add_company(db: Database, settings: Settings, meta_url: str, bridge_url: str, name: str = "Acme") -> Numbers:
    """A company, its Meta connection (fake's token, encrypted) and Baileys connection (fake's key)."""
    secrets = Secrets(settings.secrets_key_list)
    number = f"pn-{uuid.uuid4().hex[:10]}"
    with db.session() as session:
        company = Company(name=name)
        session.add(company)
        session.flush()
        meta = Connection(
            company_id=company.id,
            provider=Provider.META,
            status=ConnectionStatus.ACTIVE,
            phone_number_id=number,
            waba_id="waba",
            display_phone_number="15550783881",
            access_token=secrets.encrypt(DEFAULT_TOKEN),
        )
        bridge = Connection(
            company_id=company.id,
            provider=Provider.BAILEYS,
            status=ConnectionStatus.ACTIVE,
            bridge_url=bridge_url,
            bridge_instance=DEFAULT_INSTANCE if name == "Acme" else name,
            bridge_api_key=secrets.encrypt(DEFAULT_API_KEY),
        )
        session.add_all([meta, bridge])
        session.flush()
        return Numbers(company.id, meta.id, bridge.id, number)


@pytest.fixture
def numbers(db: Database, settings: Settings, fake_meta: str, fake_evolution: str) -> Numbers:
    """The default company with its two connections."""
    return add_company(db, settings, fake_meta, fake_evolution)


def local_storage(settings: Settings) -> MediaStorage:
    """The session's local media directory."""
    return LocalStorage(settings.media_dir)


async def fetch_context(settings: Settings, graph_url: str, storage: MediaStorage | None = None) -> FetchContext:
    """A media fetcher context (pool open) on the fake Graph API; close with :func:`close_context`."""
    pool = async_pool(settings)
    await pool.open()
    return FetchContext(
        pool=pool,
        http=media_http_client(),
        storage=storage or local_storage(settings),
        secrets=Secrets(settings.secrets_key_list),
        graph_url=graph_url,
        api_version=settings.meta_api_version,
        retention_days=settings.media_retention_days,
        max_bytes=settings.media_max_bytes,
    )


async def close_context(ctx: FetchContext) -> None:
    """Close what :func:`fetch_context` opened."""
    await ctx.http.aclose()
    await ctx.pool.close()
