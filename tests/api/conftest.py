"""Fixtures for the API tests: the app on this session's database and Redis namespace, a token-bearing client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.settings import Settings


@pytest.fixture
def app_client(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """A client without credentials (its lifespan opens the pool and Redis)."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def api(app_client: TestClient, settings: Settings) -> TestClient:
    """The same client, sending the API token."""
    app_client.headers["authorization"] = f"Bearer {settings.api_token}"
    return app_client


def make_company(api: TestClient, name: str = "Acme") -> dict[str, Any]:
    """A company created through the API."""
    response = api.post("/api/companies", json={"name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


def make_connection(api: TestClient, company_id: int, **extra: Any) -> dict[str, Any]:
    """A Meta connection created through the API (``service_window`` off unless given)."""
    body = {
        "company_id": company_id,
        "provider": "meta",
        "name": "main number",
        "phone_number_id": extra.pop("phone_number_id", f"pn-{company_id}"),
        "access_token": "EAAG-secret-token",
        "display_phone_number": "+1 555 0100",
        "service_window": "off",  # free-form messages to numbers that never wrote (a test number)
        **extra,
    }
    response = api.post("/api/connections", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def company(api: TestClient) -> dict[str, Any]:
    """A company with one active Meta connection (``company["connection"]``)."""
    created = make_company(api)
    created["connection"] = make_connection(api, created["id"])
    return created
