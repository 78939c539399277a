"""The access matrix over EVERY route of ``ENDPOINTS`` (parametrized from the table itself, so a new route
without a scope, or without a case here, fails): company A's key never reads or changes company B's data
(404 for B's ids, 403 for a body or filter naming B), a key without the route's scope gets 403, a revoked or
expired key 401, and an admin key sees everything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from libs.access.keys import AUTHENTICATED, PUBLIC, SCOPES
from libs.api.app import ENDPOINTS
from libs.api.openapi import Endpoint
from tests.access.conftest import World

PROTECTED = [e for e in ENDPOINTS if e.auth]
ROUTE_IDS = [f"{e.method} {e.path}" for e in PROTECTED]
SCOPED = [e for e in PROTECTED if e.scope != AUTHENTICATED]

#: A request aimed at company B's data: (path, keyword arguments for the client, statuses allowed for A's key).
Probe = tuple[str, dict[str, Any], set[int]]
NOT_FOUND = {404}
FORBIDDEN = {403}
#: Answers whose content is A's own (B's never appears in them).
OWN = {200}


def _csv() -> dict[str, Any]:
    return {"content": b"phone\n5511933330003\n", "headers": {"content-type": "text/csv"}}


CASES: dict[str, Callable[[World], list[Probe]]] = {
    "POST /api/messages": lambda w: [
        ("/api/messages", {"json": {"company_id": w.b.id, "to": "+5511933330003", "text": "x"}}, FORBIDDEN)],
    "GET /api/messages": lambda w: [
        (f"/api/messages?company_id={w.b.id}", {}, FORBIDDEN), ("/api/messages", {}, OWN),
        (f"/api/messages?campaign_id={w.b.campaign}", {}, OWN)],
    "GET /api/messages/{id:int}": lambda w: [(f"/api/messages/{w.b.message}", {}, NOT_FOUND)],
    "POST /api/messages/{id:int}/retry": lambda w: [(f"/api/messages/{w.b.message}/retry", {}, NOT_FOUND)],
    "POST /api/media": lambda w: [(f"/api/media?company_id={w.b.id}", {
        "files": {"file": ("a.pdf", b"%PDF-1.4 x", "application/pdf")}}, FORBIDDEN)],
    "GET /api/media/{id}": lambda w: [(f"/api/media/{w.b.media}", {}, NOT_FOUND)],
    "GET /api/contacts": lambda w: [(f"/api/contacts?company_id={w.b.id}", {}, FORBIDDEN), ("/api/contacts", {}, OWN)],
    "GET /api/contacts/{id:int}/messages": lambda w: [(f"/api/contacts/{w.b.contact}/messages", {}, NOT_FOUND)],
    "GET /api/events": lambda w: [(f"/api/events?company_id={w.b.id}", {}, FORBIDDEN), ("/api/events", {}, OWN)],
    "GET /api/events/stream": lambda w: [(f"/api/events/stream?company_id={w.b.id}", {}, FORBIDDEN)],
    "GET /api/events/{id}": lambda w: [(f"/api/events/{w.b_event}", {}, NOT_FOUND)],
    "POST /api/webhook-endpoints": lambda w: [("/api/webhook-endpoints", {
        "json": {"company_id": w.b.id, "url": "https://x.example.com/h"}}, FORBIDDEN)],
    "GET /api/webhook-endpoints": lambda w: [
        (f"/api/webhook-endpoints?company_id={w.b.id}", {}, FORBIDDEN), ("/api/webhook-endpoints", {}, OWN)],
    "GET /api/webhook-endpoints/{id:int}": lambda w: [(f"/api/webhook-endpoints/{w.b.endpoint}", {}, NOT_FOUND)],
    "PATCH /api/webhook-endpoints/{id:int}": lambda w: [
        (f"/api/webhook-endpoints/{w.b.endpoint}", {"json": {"url": "https://evil.example.com/x"}}, NOT_FOUND)],
    "DELETE /api/webhook-endpoints/{id:int}": lambda w: [(f"/api/webhook-endpoints/{w.b.endpoint}", {}, NOT_FOUND)],
    "POST /api/webhook-endpoints/{id:int}/rotate-secret": lambda w: [
        (f"/api/webhook-endpoints/{w.b.endpoint}/rotate-secret", {}, NOT_FOUND)],
    "POST /api/webhook-endpoints/{id:int}/test": lambda w: [
        (f"/api/webhook-endpoints/{w.b.endpoint}/test", {}, NOT_FOUND)],
    "POST /api/webhook-endpoints/{id:int}/replay": lambda w: [
        (f"/api/webhook-endpoints/{w.b.endpoint}/replay", {"json": {"since": "2026-01-01T00:00:00Z"}}, NOT_FOUND)],
    "GET /api/opt-outs": lambda w: [(f"/api/opt-outs?company_id={w.b.id}", {}, FORBIDDEN), ("/api/opt-outs", {}, OWN)],
    "POST /api/opt-outs": lambda w: [
        ("/api/opt-outs", {"json": {"company_id": w.b.id, "phones": ["5511933330003"]}}, FORBIDDEN)],
    "POST /api/opt-outs/import": lambda w: [(f"/api/opt-outs/import?company_id={w.b.id}", _csv(), FORBIDDEN)],
    "DELETE /api/opt-outs/{phone}": lambda w: [(f"/api/opt-outs/5511933330003?company_id={w.b.id}", {}, FORBIDDEN)],
    "POST /api/companies": lambda w: [("/api/companies", {"json": {"name": "mine"}}, FORBIDDEN)],
    "GET /api/companies": lambda w: [("/api/companies", {}, OWN)],
    "GET /api/companies/{id:int}": lambda w: [(f"/api/companies/{w.b.id}", {}, NOT_FOUND)],
    "POST /api/connections": lambda w: [("/api/connections", {"json": {
        "company_id": w.b.id, "provider": "meta", "phone_number_id": "pn-x", "access_token": "t"}}, FORBIDDEN)],
    "GET /api/connections": lambda w: [
        (f"/api/connections?company_id={w.b.id}", {}, FORBIDDEN), ("/api/connections", {}, OWN)],
    "GET /api/connections/{id:int}": lambda w: [(f"/api/connections/{w.b.connection}", {}, NOT_FOUND)],
    "PATCH /api/connections/{id:int}": lambda w: [
        (f"/api/connections/{w.b.connection}", {"json": {"name": "taken"}}, NOT_FOUND)],
    "POST /api/connections/{id:int}/deactivate": lambda w: [
        (f"/api/connections/{w.b.connection}/deactivate", {}, NOT_FOUND)],
    "POST /api/connections/{id:int}/webhook-secret": lambda w: [
        (f"/api/connections/{w.b.connection}/webhook-secret", {}, NOT_FOUND)],
    "GET /api/templates": lambda w: [(f"/api/templates?company_id={w.b.id}", {}, FORBIDDEN),
        ("/api/templates", {}, OWN), (f"/api/templates?connection_id={w.b.connection}", {}, NOT_FOUND)],
    "POST /api/templates/sync": lambda w: [
        ("/api/templates/sync", {"json": {"connection_id": w.b.connection}}, NOT_FOUND),
        ("/api/templates/sync", {"json": {"company_id": w.b.id}}, FORBIDDEN)],
    "POST /api/campaigns": lambda w: [("/api/campaigns", {"json": {
        "company_id": w.b.id, "connection_id": w.b.connection, "name": "x", "text": "x"}}, FORBIDDEN),
        ("/api/campaigns", {"json": {
        "company_id": w.a.id, "connection_id": w.b.connection, "name": "x", "text": "x"}}, {404, 409, 422})],
    "GET /api/campaigns": lambda w: [("/api/campaigns", {}, OWN)],
    "GET /api/campaigns/{id:int}": lambda w: [(f"/api/campaigns/{w.b.campaign}", {}, NOT_FOUND)],
    "POST /api/campaigns/{id:int}/recipients": lambda w: [(f"/api/campaigns/{w.b.campaign}/recipients", _csv(),
                                                           NOT_FOUND)],
    "POST /api/campaigns/{id:int}/start": lambda w: [(f"/api/campaigns/{w.b.campaign}/start", {}, NOT_FOUND)],
    "POST /api/campaigns/{id:int}/pause": lambda w: [(f"/api/campaigns/{w.b.campaign}/pause", {}, NOT_FOUND)],
    "POST /api/campaigns/{id:int}/resume": lambda w: [(f"/api/campaigns/{w.b.campaign}/resume", {}, NOT_FOUND)],
    "POST /api/campaigns/{id:int}/cancel": lambda w: [(f"/api/campaigns/{w.b.campaign}/cancel", {}, NOT_FOUND)],
    # queue stats, jobs and dead letters are not kept per company: ops scopes are for keys without a company
    "GET /api/queues": lambda w: [("/api/queues", {}, FORBIDDEN)],
    "GET /api/jobs/{id}": lambda w: [("/api/jobs/abc", {}, FORBIDDEN)],
    "GET /api/dead-letters": lambda w: [("/api/dead-letters", {}, FORBIDDEN)],
    "POST /api/dead-letters/{id:int}/replay": lambda w: [("/api/dead-letters/1/replay", {}, FORBIDDEN)],
    "GET /metrics": lambda w: [("/metrics", {}, FORBIDDEN)],
    "POST /api/keys": lambda w: [("/api/keys", {"json": {"company_id": w.b.id, "scopes": ["messages:read"]}},
                                  FORBIDDEN)],
    "GET /api/keys": lambda w: [("/api/keys", {}, FORBIDDEN)],
    "DELETE /api/keys/{key_id}": lambda w: [(f"/api/keys/{w.b_key_id}", {}, FORBIDDEN)],
    "GET /api/audit": lambda w: [("/api/audit", {}, FORBIDDEN)],
    "GET /api/me": lambda w: [("/api/me", {}, OWN)],
}  # fmt: skip


def _b_snapshot(w: World) -> list[Any]:
    """B's rows as the admin sees them (what A's requests must leave as they were)."""
    paths = [f"/api/connections/{w.b.connection}", f"/api/campaigns/{w.b.campaign}", f"/api/messages/{w.b.message}",
             f"/api/webhook-endpoints/{w.b.endpoint}", f"/api/contacts/{w.b.contact}/messages",
             f"/api/keys?company_id={w.b.id}"]  # fmt: skip
    snapshot = []
    for path in paths:
        response = w.client.get(path, headers=w.admin)
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        if isinstance(body, dict):
            body.pop("last_success_at", None)
        snapshot.append(body)
    return snapshot


def _leaks(w: World, text: str) -> list[str]:
    """B's secrets (and the admin token) found in an answer."""
    return [s for s in [*w.b.secrets, w.settings.api_token, w.b_key] if s in text]


def _company_ids(body: Any) -> set[int]:
    found: set[int] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "company_id" and isinstance(value, int):
                found.add(value)
            found |= _company_ids(value)
    elif isinstance(body, list):
        for item in body:
            found |= _company_ids(item)
    return found


def test_every_route_declares_a_known_scope_in_the_table_and_in_openapi(world: World) -> None:
    spec = world.client.get("/openapi.json", headers=world.admin).json()
    for e in ENDPOINTS:
        assert e.scope in (*SCOPES, AUTHENTICATED, PUBLIC), f"{e.method} {e.path} declares no known scope"
        assert (e.scope == PUBLIC) == (not e.auth), f"{e.method} {e.path}: public iff open"
        operation = spec["paths"][e.path.replace("{id:int}", "{id}")][e.method.lower()]
        assert operation["x-scopes"] == ([] if e.scope in (AUTHENTICATED, PUBLIC) else [e.scope])
        assert operation["security"] == ([{"bearer": []}] if e.auth else [])


def test_every_protected_route_has_a_cross_company_case() -> None:
    assert sorted(CASES) == sorted(ROUTE_IDS)


@pytest.mark.parametrize("endpoint", PROTECTED, ids=ROUTE_IDS)
def test_company_a_key_never_reads_or_changes_company_b(world: World, endpoint: Endpoint) -> None:
    changes = endpoint.method != "GET"
    before = _b_snapshot(world) if changes else None
    for path, kwargs, allowed in CASES[f"{endpoint.method} {endpoint.path}"](world):
        # When A's key (every scope a company key can hold) aims at B's data
        headers = {**kwargs.pop("headers", {}), **world.auth(world.key_a)}
        response = world.client.request(endpoint.method, path, **kwargs, headers=headers)
        # Then it is refused (404 for B's ids, 403 for B's company), or answered with A's own data only
        assert response.status_code in allowed, (path, response.status_code, response.text)
        assert response.status_code < 500
        assert _leaks(world, response.text) == []
        if response.status_code == 200 and response.headers["content-type"].startswith("application/json"):
            assert _company_ids(response.json()) <= {world.a.id}, (path, response.text)
            assert "bravo" not in response.text.lower() or path == "/openapi.json", path
    # And B's rows are as they were
    if changes:
        assert _b_snapshot(world) == before


@pytest.mark.parametrize("endpoint", SCOPED, ids=[f"{e.method} {e.path}" for e in SCOPED])
def test_a_key_without_the_route_scope_gets_403(world: World, endpoint: Endpoint) -> None:
    path = endpoint.path.replace("{id:int}", "1").replace("{id}", "x").replace("{key_id}", "0" * 16)
    path = path.replace("{phone}", "5511933330003")  # only a phone number reaches that route
    response = world.client.request(endpoint.method, path, headers=world.auth(world.without[endpoint.scope]))
    assert response.status_code == 403, response.text
    assert response.json() == {"error": f"this API key lacks the {endpoint.scope} scope"}


@pytest.mark.parametrize("endpoint", PROTECTED, ids=ROUTE_IDS)
def test_revoked_and_expired_keys_get_401_on_every_route(world: World, endpoint: Endpoint) -> None:
    path = endpoint.path.replace("{id:int}", "1").replace("{id}", "x").replace("{key_id}", "0" * 16)
    for key in (world.revoked, world.expired):
        response = world.client.request(endpoint.method, path, headers=world.auth(key))
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("who", ["bootstrap", "issued"])
def test_an_admin_key_sees_every_company(world: World, who: str) -> None:
    headers = world.admin if who == "bootstrap" else world.auth(world.key(None, ["admin"])["key"])
    for company in (world.a, world.b):
        for path in (f"/api/companies/{company.id}", f"/api/connections/{company.connection}",
                     f"/api/campaigns/{company.campaign}", f"/api/messages/{company.message}",
                     f"/api/webhook-endpoints/{company.endpoint}"):  # fmt: skip
            assert world.client.get(path, headers=headers).status_code == 200, path
    listed = world.client.get("/api/connections", headers=headers).json()
    assert {row["company_id"] for row in listed} == {world.a.id, world.b.id}
    assert world.client.get("/api/queues", headers=headers).status_code == 200


def test_a_company_key_reaches_its_own_rows(world: World) -> None:
    headers = world.auth(world.key_a)
    a = world.a
    for path in (f"/api/companies/{a.id}", f"/api/connections/{a.connection}", f"/api/campaigns/{a.campaign}",
                 f"/api/messages/{a.message}", f"/api/webhook-endpoints/{a.endpoint}",
                 f"/api/contacts/{a.contact}/messages"):  # fmt: skip
        assert world.client.get(path, headers=headers).status_code == 200, path
    assert [c["id"] for c in world.client.get("/api/companies", headers=headers).json()] == [world.a.id]
    me = world.client.get("/api/me", headers=headers).json()
    assert me["company_id"] == world.a.id and "ops:read" not in me["scopes"]


def test_expired_keys_expire_by_the_clock(world: World) -> None:
    soon = world.stored_key(world.a.id, ["messages:read"], expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert world.client.get("/api/messages", headers=world.auth(soon)).status_code == 200
