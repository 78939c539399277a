"""Fixtures for the connection tests: the operations API with the admin token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.settings import Settings


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API (this session's database and Redis) sending the admin token."""
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def company(api: TestClient, name: str = "Acme") -> int:
    """A company made through the API; its id."""
    response = api.post("/api/companies", json={"name": name})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
