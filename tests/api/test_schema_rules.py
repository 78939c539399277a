"""What the contract run found, pinned: the published schema and the code agree on each rule, and the answers
schemathesis checks (Allow on 405, repeated query parameters, NUL, ports) hold without it."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError
from starlette.testclient import TestClient

from libs.api.query import SINCE
from libs.api.schema_rules import URL_PATTERN
from libs.api.schemas import CAMPAIGN_MEDIA, KIND_FIELDS, CampaignIn, MessageIn, TemplateSyncIn
from libs.events.types import EVENT_ID_PATTERN, parse_event_id
from libs.outbound import AddressGuard


def test_a_405_names_only_the_methods_of_that_path(api: TestClient) -> None:
    # Given /api/opt-outs/import (POST) beside /api/opt-outs/{phone} (DELETE, phone numbers only)
    # When another method asks for it
    response = api.request("OPTIONS", "/api/opt-outs/import")
    # Then the answer is 405 and Allow names POST alone (RFC 9110)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert api.delete("/api/opt-outs/import").headers["allow"] == "POST"


def test_the_schema_says_what_each_body_needs(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    assert [b["required"] for b in schemas["MessageIn"]["oneOf"]] == [["text"], *([kind] for kind in KIND_FIELDS)]
    assert [b["required"] for b in schemas["CampaignIn"]["oneOf"]] == [["text"], ["template"], *(
        [medium] for medium in CAMPAIGN_MEDIA)]  # fmt: skip
    assert schemas["ConnectionIn"]["discriminator"]["propertyName"] == "provider"
    assert schemas["MetaConnectionIn"]["required"] == ["company_id", "provider", "phone_number_id", "access_token"]
    assert schemas["ConnectionPatch"]["minProperties"] == 1 and schemas["EndpointPatch"]["minProperties"] == 1
    assert schemas["EndpointPatch"]["properties"]["enabled"] == {"type": "boolean", "title": "Enabled"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"enabled": "yes"}, 422),  # a strict boolean
        ({"enabled": 1}, 422),
        ({"enabled": None}, 422),  # no nulls in a PATCH
        ({}, 422),  # nothing to change
        ({"rate_per_second": 5.0}, 200),  # 5.0 is an integer in JSON Schema
        ({"rate_per_second": "5"}, 422),
        ({"description": "  trimmed  "}, 200),
    ],
)
def test_an_endpoint_patch_is_as_strict_as_its_schema(
    api: TestClient, company: dict[str, Any], body: dict[str, Any], status: int
) -> None:
    created = api.post("/api/webhook-endpoints", json={"company_id": company["id"], "url": "http://127.0.0.1:9/x"})
    assert created.status_code == 201, created.text
    response = api.patch(f"/api/webhook-endpoints/{created.json()['id']}", json=body)
    assert response.status_code == status, response.text


def test_state_and_shape_refusals_are_both_422(api: TestClient, company: dict[str, Any]) -> None:
    # a body valid by the schema, naming a company that does not exist: the state refuses it (422, declared;
    # schemathesis.toml expects it for create_endpoint)
    unknown = api.post("/api/webhook-endpoints", json={"company_id": 999_999, "url": "http://127.0.0.1:9/x"})
    assert unknown.status_code == 422 and "company 999999 does not exist" in unknown.json()["error"]
    # a body off the schema: a URL with a port out of range, a control character, NUL in any text
    for url in ("http://127.0.0.1:99999/x", "http://127.0.0.1/\x07", "http://[0]/"):
        response = api.post("/api/webhook-endpoints", json={"company_id": company["id"], "url": url})
        assert response.status_code == 422, (url, response.text)
        assert not re.search(URL_PATTERN, url)
    nul = api.post("/api/companies", json={"name": "a\u0000b"})
    assert nul.status_code == 422 and nul.json()["details"] == [
        {"field": "name", "reason": "NUL (\\u0000) is not accepted in text"}
    ]


def test_query_parameters_are_read_once_and_as_published(api: TestClient, company: dict[str, Any]) -> None:
    assert api.get(f"/api/connections?company_id={company['id']}&company_id=1").status_code == 400
    assert api.get("/api/messages?limit=\u00b2").status_code == 400  # '²'.isdigit(), but no int
    assert api.get("/api/events?after=\u00b2").status_code == 400
    assert api.get("/api/dead-letters?since=99999999999w").status_code == 400
    assert api.get("/api/dead-letters?since=2026-01-31T00:00:00Z").status_code == 200
    # year 0 is no datetime: the schema's pattern refuses it as the code does (found by the full contract run)
    assert not re.search(SINCE["pattern"], "0000-01-01T00:30:30")
    assert api.get("/api/dead-letters?since=0000-01-01T00:30:30").status_code == 400
    assert api.get("/api/campaigns?limit=5.0").status_code == 200  # an integer, as JSON Schema counts them
    assert api.get("/api/campaigns?limit=5.5").status_code == 400
    assert api.get("/api/campaigns?limit=").status_code == 200  # empty: as if left out (clients sending None)
    both = api.get(f"/api/messages?company_id={company['id']}&after=1&before=5")
    assert both.status_code == 200 and both.json()["order"] == "asc"


def test_event_ids_are_bigints_in_the_schema_and_the_code() -> None:
    largest = "evt_7fffffffffffffff"
    assert re.search(EVENT_ID_PATTERN, largest) and parse_event_id(largest) == 2**63 - 1
    for text in ("evt_8000000000000000", "evt_0x00000000000000", "evt_ 000000000000000", "evt_0000_00000000000"):
        assert not re.search(EVENT_ID_PATTERN, text) and parse_event_id(text) is None


def test_the_guard_refuses_what_no_connection_could_use() -> None:
    guard = AddressGuard.for_environment("dev")
    guard.check_url("http://[2001:db8::1]:8080/hook")  # IPv6 and IDN stay accepted
    guard.check_url("https://exämple.com/hook")
    for url in ("http://x:65536/", "http://x/\x00", "http://x\t.com/"):
        with pytest.raises(ValueError):
            guard.check_url(url)


MESSAGE = {"company_id": 1, "to": "+5511988887777"}
IMAGE = {"link": "https://example.com/a.jpg"}
CAMPAIGN = {"company_id": 1, "connection_id": 1, "name": "spring"}
#: Bodies of the routes main added since the contract (message kinds, campaign media, template sync): the
#: published schema and the code accept exactly the same ones.
AGREEMENT: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (MessageIn, {**MESSAGE, "text": "hi"}),
    (MessageIn, {**MESSAGE, "image": IMAGE}),
    (MessageIn, {**MESSAGE, "image": {**IMAGE, "caption": "x" * 1025}}),
    (MessageIn, {**MESSAGE, "image": {**IMAGE, "id": "123"}}),  # id and link
    (MessageIn, {**MESSAGE, "image": {}}),  # neither
    (MessageIn, {**MESSAGE, "image": {"link": "ftp://example.com/a.jpg"}}),
    (MessageIn, {**MESSAGE, "image": IMAGE, "text": "hi"}),  # two kinds
    (MessageIn, {**MESSAGE, "text": "hi", "image": None}),
    (MessageIn, {**MESSAGE, "reaction": {"message_id": "wamid.1", "emoji": ""}}),
    (MessageIn, {**MESSAGE, "reaction": {"message_id": "wamid.1", "emoji": ""}, "context": {"message_id": "w"}}),
    (MessageIn, {**MESSAGE, "text": "hi", "context": {"message_id": "wamid.1"}}),
    (MessageIn, {**MESSAGE, "location": {"latitude": "1", "longitude": 2}}),  # no coercion
    (MessageIn, {**MESSAGE, "audio": {"id": "1", "voice": "yes"}}),
    (MessageIn, {**MESSAGE, "contacts": []}),
    (MessageIn, {**MESSAGE, "interactive": {"type": "cta_url", "body": {"text": "b"}, "action": {
        "name": "cta_url", "parameters": {"display_text": "Go", "url": "https://example.com"}}}}),
    (MessageIn, {**MESSAGE, "interactive": {"type": "button", "header": {"type": "text", "image": IMAGE},
        "body": {"text": "b"}, "action": {"buttons": [{"type": "reply", "reply": {"id": "1", "title": "t"}}]}}}),
    (MessageIn, {**MESSAGE, "template": {"name": "t", "components": [
        {"type": "button", "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "x"}]}]}}),
    (MessageIn, {**MESSAGE, "template": {"name": "t", "components": [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "payload", "payload": "x"}]}]}}),
    (CampaignIn, {**CAMPAIGN, "text": "Hi {name}"}),
    (CampaignIn, {**CAMPAIGN, "image": IMAGE}),
    (CampaignIn, {**CAMPAIGN, "image": IMAGE, "text": "Hi {name}"}),
    (CampaignIn, {**CAMPAIGN, "image": {**IMAGE, "caption": "c"}}),
    (CampaignIn, {**CAMPAIGN, "image": IMAGE, "text": "x" * 1025}),
    (CampaignIn, {**CAMPAIGN, "sticker": IMAGE, "text": "hi"}),
    (CampaignIn, {**CAMPAIGN, "sticker": IMAGE}),
    (CampaignIn, {**CAMPAIGN, "image": IMAGE, "video": IMAGE}),
    (CampaignIn, {**CAMPAIGN, "image": IMAGE, "template": {"name": "t"}}),
    (CampaignIn, CAMPAIGN),
    (TemplateSyncIn, {}),
    (TemplateSyncIn, {"connection_id": 1}),
    (TemplateSyncIn, {"connection_id": 1, "company_id": None}),
    (TemplateSyncIn, {"connection_id": 1, "company_id": 2}),
]  # fmt: skip


@pytest.mark.parametrize(("model", "body"), AGREEMENT, ids=range(len(AGREEMENT)))
def test_the_schema_and_the_code_accept_the_same_bodies(
    api: TestClient, model: type[BaseModel], body: dict[str, Any]
) -> None:
    # Given the published document
    document = api.get("/openapi.json").json()
    validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{model.__name__}", **document})
    # When a body is checked by the schema and by the model the route reads it with
    by_schema = validator.is_valid(body)
    try:
        model.model_validate(body)
        by_code = True
    except ValidationError:
        by_code = False
    # Then both say the same
    assert by_schema == by_code, (by_schema, by_code)


def test_a_body_the_handler_may_go_without_is_published_as_optional(api: TestClient) -> None:
    # An absent body reads as the model's defaults there (every Meta connection; start now); the contract run
    # found a body-less sync accepted while the schema called the body required
    paths = api.get("/openapi.json").json()["paths"]
    optional = {
        (path, method)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "requestBody" in operation and not operation["requestBody"]["required"]
    }
    assert optional == {("/api/templates/sync", "post"), ("/api/campaigns/{id}/start", "post")}
