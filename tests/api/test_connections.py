"""Companies and connections: create, list, change, deactivate — and secrets never come back out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import make_company, make_connection

SECRETS = ("EAAG-secret-token", "bridge-key-123", "EAAG-rotated")


def assert_no_secret(payload: Any) -> None:
    text = json.dumps(payload)
    for secret in SECRETS:
        assert secret not in text
    assert 'access_token"' not in text.replace('has_access_token"', "")
    assert 'bridge_api_key"' not in text.replace('has_bridge_api_key"', "")


def test_companies_are_created_listed_and_read(api: TestClient) -> None:
    created = make_company(api, "Acme")
    assert created["name"] == "Acme" and created["campaign_weight"] == 1
    assert api.get("/api/companies").json()[0]["id"] == created["id"]
    assert api.get(f"/api/companies/{created['id']}").json() == created
    assert api.get("/api/companies/999").status_code == 404
    assert api.post("/api/companies", json={"name": ""}).status_code == 422


def test_a_meta_connection_stores_its_token_but_never_returns_it(api: TestClient) -> None:
    company = make_company(api)
    created = make_connection(api, company["id"], waba_id="waba-1")
    assert created["provider"] == "meta" and created["status"] == "active"
    assert created["has_access_token"] is True and created["has_bridge_api_key"] is False
    assert created["rate_per_second"] == 80
    listed = api.get("/api/connections").json()
    one = api.get(f"/api/connections/{created['id']}").json()
    patched = api.patch(
        f"/api/connections/{created['id']}", json={"access_token": "EAAG-rotated", "rate_per_second": 200}
    )
    assert patched.status_code == 200 and patched.json()["rate_per_second"] == 200
    deactivated = api.post(f"/api/connections/{created['id']}/deactivate")
    assert deactivated.json()["status"] == "inactive"
    reactivated = api.patch(f"/api/connections/{created['id']}", json={"status": "active"})
    assert reactivated.json()["status"] == "active" and reactivated.json()["status_reason"] is None
    for payload in (created, listed, one, patched.json(), deactivated.json(), reactivated.json()):
        assert_no_secret(payload)


def test_a_baileys_connection_needs_its_bridge_fields(api: TestClient) -> None:
    company = make_company(api)
    body = {
        "company_id": company["id"],
        "provider": "baileys",
        "bridge_url": "http://bridge:8080",
        "bridge_instance": "acme-1",
        "bridge_api_key": "bridge-key-123",
        "rate_per_second": 5,
    }
    created = api.post("/api/connections", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["has_bridge_api_key"] is True
    assert_no_secret(created.json())
    missing = api.post("/api/connections", json={**body, "bridge_api_key": None, "bridge_instance": "acme-2"})
    assert missing.status_code == 422 and "bridge_api_key" in missing.json()["error"]
    stray = api.post("/api/connections", json={**body, "bridge_instance": "acme-3", "access_token": "x"})
    assert stray.status_code == 422 and "do not apply" in stray.json()["error"]
    patch = api.patch(f"/api/connections/{created.json()['id']}", json={"access_token": "x"})
    assert patch.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"provider": "meta", "access_token": "t"},
        {"provider": "meta", "phone_number_id": "1"},
        {"provider": "sms", "phone_number_id": "1", "access_token": "t"},
        {"provider": "meta", "phone_number_id": "1", "access_token": "t", "rate_per_second": 5000},
    ],
)
def test_invalid_connections_are_422(api: TestClient, body: dict[str, Any]) -> None:
    company = make_company(api)
    response = api.post("/api/connections", json={"company_id": company["id"], **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("invalid input")


def test_connection_conflicts_and_unknown_ids(api: TestClient) -> None:
    company = make_company(api)
    make_connection(api, company["id"], phone_number_id="dup")
    again = api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "dup", "access_token": "t"},
    )
    assert again.status_code == 409
    unknown_company = api.post(
        "/api/connections", json={"company_id": 999, "provider": "meta", "phone_number_id": "z", "access_token": "t"}
    )
    assert unknown_company.status_code == 409
    assert api.get("/api/connections/999").status_code == 404
    assert api.patch("/api/connections/999", json={"name": "x"}).status_code == 404
    assert api.post("/api/connections/999/deactivate").status_code == 404
    assert api.patch(f"/api/connections/{company['id']}", json={}).status_code == 422
    assert api.get("/api/connections?company_id=abc").status_code == 400
