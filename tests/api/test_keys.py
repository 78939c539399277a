"""API keys through the API: shown once, stored hashed, validated scopes; revocation within the cache time; rate
limits (429 + Retry-After); the one size-capped body reader; the audit log of changes."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs.access.actions import Verifier
from libs.api.app import create_app
from libs.api.http import MAX_JSON_BYTES
from libs.db.engine import Database
from libs.ops.processes import ROOT
from libs.settings import Settings
from tests.api.conftest import make_company


def _key(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/keys", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_key_is_shown_once_and_stored_as_a_hash(api: TestClient, db: Database) -> None:
    company = make_company(api)
    created = _key(api, company_id=company["id"], scopes=["messages:read", "messages:write"], name="crm")
    key = created["key"]
    assert key.startswith(f"zq_{created['key_id']}_")
    assert created["scopes"] == ["messages:read", "messages:write"]
    listed = api.get("/api/keys").text
    assert created["key_id"] in listed and key not in listed and key.split("_", 2)[2] not in listed
    with db.engine.connect() as conn:
        dump = str(conn.execute(text("SELECT * FROM api_keys")).all())
    assert key.split("_", 2)[2] not in dump  # the secret is not in the table, only its hash
    assert "secret_hash" not in listed


def test_last_used_at_is_set_on_use(api: TestClient, app_client: TestClient) -> None:
    company = make_company(api)
    created = _key(api, company_id=company["id"], scopes=["messages:read"])
    assert created["last_used_at"] is None
    response = app_client.get("/api/messages", headers={"authorization": f"Bearer {created['key']}"})
    assert response.status_code == 200
    (row,) = [k for k in api.get("/api/keys").json() if k["key_id"] == created["key_id"]]
    assert row["last_used_at"] is not None


#: Off the schema, or valid by it but refused by the current state: 422 either way.
BAD_REQUESTS = [
    ({"company_id": None, "scopes": ["messages:fly"]}, 422, "unknown scope(s): messages:fly"),
    ({"company_id": "own", "scopes": ["ops:read"]}, 422, "ops:read cannot be given to a company key"),
    ({"company_id": "own", "scopes": ["admin"]}, 422, "admin cannot be given to a company key"),
    ({"company_id": 999_999, "scopes": ["messages:read"]}, 422, "no company 999999"),
    ({"company_id": None, "scopes": ["admin"], "expires_at": "2020-01-01T00:00:00Z"}, 422, "expires_at is in the past"),
    ({"company_id": None, "scopes": []}, 422, "scopes: List should have at least 1 item"),
    ({"company_id": None, "scopes": ["admin"], "expires_at": 1893456000}, 422, "a date-time is text"),
]


def test_bad_key_requests_are_refused_with_the_reason(api: TestClient) -> None:
    own = make_company(api)["id"]
    for body, status, reason in BAD_REQUESTS:
        response = api.post(
            "/api/keys", json={**body, "company_id": own if body["company_id"] == "own" else body["company_id"]}
        )
        assert response.status_code == status, body
        assert reason in response.json()["error"], response.text
    assert api.get("/api/keys").json() == []


def test_revoking_an_unknown_key_is_404_and_revoking_twice_keeps_the_first_time(api: TestClient) -> None:
    assert api.delete(f"/api/keys/{'0' * 16}").status_code == 404
    created = _key(api, scopes=["ops:read"])
    first = api.delete(f"/api/keys/{created['key_id']}").json()["revoked_at"]
    assert first is not None
    assert api.delete(f"/api/keys/{created['key_id']}").json()["revoked_at"] == first


def test_a_revoked_key_is_refused_within_the_cache_time(
    settings: Settings, db: Database, broker: Any, api: TestClient
) -> None:
    created = _key(api, scopes=["ops:read"])
    cached = settings.model_copy(update={"api_key_cache_seconds": 0.5})
    with TestClient(create_app(cached)) as client:
        headers = {"authorization": f"Bearer {created['key']}"}
        assert client.get("/api/queues", headers=headers).status_code == 200
        assert api.delete(f"/api/keys/{created['key_id']}").status_code == 200
        deadline = time.monotonic() + 10
        while client.get("/api/queues", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "the revocation never took effect"
        assert client.get("/api/queues", headers=headers).status_code == 401


def test_the_verifier_refuses_a_wrong_secret_for_a_known_key_id(api: TestClient, app_client: TestClient) -> None:
    created = _key(api, scopes=["ops:read"])
    forged = f"zq_{created['key_id']}_{'A' * 43}"
    assert app_client.get("/api/queues", headers={"authorization": f"Bearer {forged}"}).status_code == 401
    assert Verifier("", 5.0).bootstrap_token == ""  # an unset bootstrap token authenticates nobody


@pytest.fixture
def limited(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """An app whose keys may make 1 request a second, 2 at once."""
    slow = settings.model_copy(update={"api_rate_per_second": 1.0, "api_rate_burst": 2})
    with TestClient(create_app(slow)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def test_a_key_over_its_rate_gets_429_with_retry_after(limited: TestClient) -> None:
    key = _key(limited, scopes=["ops:read"])["key"]
    other = _key(limited, scopes=["ops:read"])["key"]
    answers = [limited.get("/api/queues", headers={"authorization": f"Bearer {key}"}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert answers[2].status_code == 429
    assert int(answers[2].headers["retry-after"]) >= 1
    assert "rate limit" in answers[2].json()["error"]
    # each key has its own bucket; the bootstrap token has none
    assert limited.get("/api/queues", headers={"authorization": f"Bearer {other}"}).status_code == 200
    assert all(limited.get("/api/me").status_code == 200 for _ in range(5))


def test_bodies_past_the_cap_are_413_on_json_and_optional_bodies(api: TestClient) -> None:
    big = b"{" + b" " * MAX_JSON_BYTES + b"}"
    for path in ("/api/keys", "/api/campaigns/1/start", "/api/messages"):
        response = api.post(path, content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413, path
    assert api.get("/api/keys").json() == []


def test_no_handler_reads_a_body_but_through_the_capped_reader() -> None:
    readers = {"body", "stream", "json", "form"}
    found = []
    for path in sorted((ROOT / "libs" / "api").glob("*.py")):
        if path.name == "http.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in readers and getattr(node.value, "id", "") == "request":
                found.append(f"{path.name}: request.{node.attr}")
    assert found == []


def test_streamed_uploads_read_their_body_through_the_capped_reader_too() -> None:
    # The media upload parses multipart as it streams (libs/api/multipart.py, which never sees the request):
    # every call of its parser is fed by body_chunks with an explicit cap.
    calls = []
    for path in sorted((ROOT / "libs" / "api").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "read_upload":
                source = node.args[0]
                assert isinstance(source, ast.Call) and getattr(source.func, "id", "") == "body_chunks", path.name
                assert len(source.args) == 2, f"{path.name}: body_chunks without its cap"
                calls.append(path.name)
    assert calls == ["media.py"]
    multipart = ast.parse((ROOT / "libs" / "api" / "multipart.py").read_text())
    assert not any(isinstance(n, ast.Name) and n.id == "request" for n in ast.walk(multipart))


def test_changes_are_audited_with_the_key_and_target(api: TestClient, app_client: TestClient) -> None:
    company = make_company(api)
    created = _key(api, scopes=["admin"], name="ops")
    headers = {"authorization": f"Bearer {created['key']}"}
    revoked = _key(api, company_id=company["id"], scopes=["messages:read"])
    assert app_client.delete(f"/api/keys/{revoked['key_id']}", headers=headers).status_code == 200
    assert app_client.get("/api/queues", headers=headers).status_code == 200  # a read: not recorded
    entries = api.get("/api/audit").json()
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        (f"key:{created['key_id']}", "revoke_key", revoked["key_id"]),
        ("admin-token", "create_key", revoked["key_id"]),
        ("admin-token", "create_key", created["key_id"]),
        ("admin-token", "create_company", str(company["id"])),
    ]
    assert created["key"] not in api.get("/api/audit").text
    assert api.get("/api/audit?since=bogus").status_code == 400
    assert api.get("/api/audit?since=1h&limit=1").json()[0]["action"] == "revoke_key"


def test_a_key_is_never_let_through_when_its_rate_cannot_be_checked(
    settings: Settings, db: Database, broker: Any, api: TestClient
) -> None:
    # Given a key, and an API whose Redis is unreachable (nothing listens on helper j's port 26791)
    key = _key(api, scopes=["ops:read"])["key"]
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:26791/0"})
    with TestClient(create_app(down)) as client:
        # When the key is used, then the answer is 503 with the reason, not the route's answer
        response = client.get("/api/me", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 503
        assert "dependency is unavailable" in response.json()["error"]
        # And a wrong key is still 401
        assert (
            client.get("/api/me", headers={"authorization": "Bearer zq_0000000000000000_" + "x" * 43}).status_code
            == 401
        )
