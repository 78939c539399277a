"""Every route but the health checks (and the static page shells) needs the bearer token."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from libs.api.app import ENDPOINTS
from libs.settings import Settings

PROTECTED = [(e.method, e.path.replace("{id:int}", "1").replace("{id}", "x")) for e in ENDPOINTS if e.auth]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_answer_401_without_a_token(app_client: TestClient, method: str, path: str) -> None:
    response = app_client.request(method, path)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer wrong-token", "Basic ZGV2LWFwaS10b2tlbg==", "Bearer", "dev-api-token", "Bearer  "]
)
def test_a_wrong_token_or_scheme_is_401(app_client: TestClient, header: str) -> None:
    response = app_client.get("/api/queues", headers={"authorization": header})
    assert response.status_code == 401


def test_the_right_token_opens_the_api(app_client: TestClient, settings: Settings) -> None:
    response = app_client.get("/api/queues", headers={"authorization": f"Bearer {settings.api_token}"})
    assert response.status_code == 200


def test_health_checks_are_open(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": "ok", "postgres": "ok"}


def test_page_shells_are_open_and_hold_no_data(app_client: TestClient, settings: Settings) -> None:
    for path in ("/", "/docs", "/messages"):
        response = app_client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert settings.api_token not in response.text
        assert "sessionStorage" in response.text


def test_the_vendored_chart_library_is_served_open_and_nothing_else(app_client: TestClient) -> None:
    script = app_client.get("/static/uplot-1.6.32.iife.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "uPlot" in script.text
    assert app_client.get("/static/uplot-1.6.32.min.css").headers["content-type"].startswith("text/css")
    assert app_client.get("/static/other.js").status_code == 401  # not an open path: no listing, no guessing
    assert app_client.get("/static/other.js", headers={"authorization": "Bearer dev-api-token"}).status_code in (
        401,
        404,
    )


def test_openapi_is_readable_without_a_token_and_its_text_has_no_rst(app_client: TestClient) -> None:
    response = app_client.get("/openapi.json")
    assert response.status_code == 200
    descriptions = [op.get("description", "") for ops in response.json()["paths"].values() for op in ops.values()]
    assert any("`" in text for text in descriptions)  # code spans survive, as Markdown
    for text in descriptions:
        assert "``" not in text and ":func:" not in text and ":class:" not in text and ":mod:" not in text, text


def test_openapi_documents_every_route(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for endpoint in ENDPOINTS:
        assert (endpoint.method, endpoint.path.replace("{id:int}", "{id}")) in documented
    assert "MessageIn" in spec["components"]["schemas"]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_unknown_paths_are_json_404(api: TestClient) -> None:
    response = api.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
