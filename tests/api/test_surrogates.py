"""Lone UTF-16 surrogates (``"\\udaae"``: valid JSON, not text) in any string of any body answer 422 naming the
field, never a 500, and store nothing; a raw surrogate's UTF-8 bytes (invalid UTF-8) stay a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import make_company


def post_json(api: TestClient, method: str, path: str, body: dict[str, Any]) -> Any:
    """``body`` serialised as ASCII JSON (surrogates as ``\\uXXXX`` escapes, as any JSON encoder writes them)."""
    content = json.dumps(body, ensure_ascii=True).encode()
    return api.request(method, path, content=content, headers={"content-type": "application/json"})


def test_a_company_name_with_a_lone_surrogate_is_refused_with_its_field(api: TestClient) -> None:
    response = post_json(api, "POST", "/api/companies", {"name": "\udaae"})
    assert response.status_code == 422, response.text
    assert response.json()["details"] == [
        {"field": "name", "reason": "a lone UTF-16 surrogate (\\uD800–\\uDFFF) is not text"}
    ]
    assert api.get("/api/companies").json() == []


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("/api/companies", {"name": "ok", "opt_out_keywords": ["STOP", "x\udc00"]}, ["opt_out_keywords.1"]),
        ("/api/messages", {"company_id": 1, "to": "5511988887777", "text": "hi \ud83d"}, ["text"]),
        (
            "/api/messages",
            {"company_id": 1, "to": "5511988887777", "template": {"name": "t\udfff", "language": "\ud800x"}},
            ["template.language", "template.name"],
        ),
        ("/api/opt-outs", {"company_id": 1, "phones": ["\udaae5511988887777"]}, ["phones.0"]),
        ("/api/keys", {"scopes": ["admin"], "name": "k\udaae"}, ["name"]),
        ("/api/webhook-endpoints", {"company_id": 1, "url": "https://a.example/\udaae"}, ["url"]),
        ("/api/companies", {"name": "ok", "\udaae": 1}, ["\ufffd"]),  # a key: shown replaced
    ],
)
def test_every_text_field_refuses_lone_surrogates(
    api: TestClient, path: str, body: dict[str, Any], fields: list[str]
) -> None:
    company = make_company(api, "Owner")
    body = {**body, "company_id": company["id"]} if "company_id" in body else body
    response = post_json(api, "POST", path, body)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["details"]] == fields
    assert "surrogate" in response.json()["error"]


def test_a_patch_with_a_lone_surrogate_changes_nothing(api: TestClient) -> None:
    company = make_company(api)
    created = api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-1", "access_token": "t"},
    ).json()
    response = post_json(api, "PATCH", f"/api/connections/{created['id']}", {"name": "n\udaae"})
    assert response.status_code == 422, response.text
    assert api.get(f"/api/connections/{created['id']}").json()["name"] == created["name"]


def test_paired_surrogates_are_text_and_raw_surrogate_bytes_are_not_json(api: TestClient) -> None:
    paired = post_json(api, "POST", "/api/companies", {"name": "smile \ud83d\ude42"})
    assert paired.status_code == 201 and paired.json()["name"] == "smile 🙂"
    raw = '{"name": "\udaae"}'.encode("utf-8", "surrogatepass")  # not UTF-8 at all
    response = api.post("/api/companies", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "body is not valid JSON"
