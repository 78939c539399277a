"""Bridge URLs go through the outbound address guard: in ``prod`` a bridge at loopback or the cloud metadata
address is refused when saved (API), unless allowlisted. (Connect time: ``tests/sending/test_bridge_rebinding.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.settings import Settings
from tests.connections.conftest import company

REFUSED_URLS = (
    "https://127.0.0.1:8080",
    "https://169.254.169.254/latest",
    "https://[::1]:8080",
    "https://localhost:8080",  # a name: refused once resolved
    "http://bridge.example.com",  # prod: https only
)


@pytest.fixture
def prod_api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API as ``prod`` builds it."""
    prod = settings.model_copy(update={"env": "prod"})
    with TestClient(create_app(prod)) as client:
        client.headers["authorization"] = f"Bearer {prod.api_token}"
        yield client


def baileys_body(owner: int, url: str, instance: str = "guarded") -> dict[str, Any]:
    return {
        "company_id": owner,
        "provider": "baileys",
        "bridge_url": url,
        "bridge_instance": instance,
        "bridge_api_key": "bridge-key",
    }


def connection_count(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(text("SELECT count(*) FROM connections")).scalar_one())


def test_prod_refuses_a_bridge_url_into_zapq_s_network_when_saved(prod_api: TestClient, db: Database) -> None:
    owner = company(prod_api)
    for url in REFUSED_URLS:
        created = prod_api.post("/api/connections", json=baileys_body(owner, url))
        assert created.status_code == 409, (url, created.text)
        assert created.json()["error"].startswith("bridge_url refused: "), url
    assert connection_count(db) == 0


def test_prod_refuses_such_a_url_in_a_patch_and_keeps_the_old_one(
    prod_api: TestClient, db: Database, settings: Settings
) -> None:
    owner = company(prod_api)
    created = prod_api.post("/api/connections", json=baileys_body(owner, "https://93.184.216.34:8443"))
    assert created.status_code == 201, created.text
    for url in ("https://127.0.0.1:8080", "https://169.254.169.254"):
        patched = prod_api.patch(f"/api/connections/{created.json()['id']}", json={"bridge_url": url})
        assert patched.status_code == 409 and "bridge_url refused" in patched.json()["error"]
    assert prod_api.get(f"/api/connections/{created.json()['id']}").json()["bridge_url"] == "https://93.184.216.34:8443"


def test_the_allowlist_lets_a_private_bridge_in(settings: Settings, db: Database, broker: Any) -> None:
    prod = settings.model_copy(update={"env": "prod", "outbound_allowlist": "10.0.0.0/8,bridge.internal"})
    with TestClient(create_app(prod)) as client:
        client.headers["authorization"] = f"Bearer {prod.api_token}"
        owner = company(client)
        assert client.post("/api/connections", json=baileys_body(owner, "https://10.1.2.3:8080")).status_code == 201
        metadata = client.post("/api/connections", json=baileys_body(owner, "https://169.254.169.254", "m"))
        assert metadata.status_code == 409
