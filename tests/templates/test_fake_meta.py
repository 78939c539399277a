"""The fake Graph API's template surface (``tests.fakes.meta_templates``) behaves as Meta documents it, so the
other tests can trust it: pages with cursors and ``next``, status webhooks that parse, template sends checked."""

from __future__ import annotations

import httpx

from libs.whatsapp import parse_meta_webhook
from tests.fakes.meta import DEFAULT_TOKEN
from tests.fakes.meta_templates import template
from tests.templates.conftest import NUMBER_ID, WABA, set_catalogue

AUTH = {"authorization": f"Bearer {DEFAULT_TOKEN}"}


def send(url: str, name: str, *body: str) -> httpx.Response:
    components = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in body]}]
    payload = {"messaging_product": "whatsapp", "to": "16505550001", "type": "template",
               "template": {"name": name, "language": {"code": "en_US"}, "components": components}}  # fmt: skip
    return httpx.post(f"{url}/v21.0/{NUMBER_ID}/messages", json=payload, headers=AUTH)


def test_pages_follow_cursors_and_next_only_while_more_follow(fake_graph: str) -> None:
    set_catalogue(fake_graph, [template(f"t{i}") for i in range(5)])
    url = f"{fake_graph}/v21.0/{WABA}/message_templates"
    first = httpx.get(url, params={"limit": 3}, headers=AUTH).json()
    assert [t["name"] for t in first["data"]] == ["t0", "t1", "t2"] and "next" in first["paging"]
    second = httpx.get(url, params={"limit": 3, "after": first["paging"]["cursors"]["after"]}, headers=AUTH).json()
    assert [t["name"] for t in second["data"]] == ["t3", "t4"] and "next" not in second["paging"]
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).json()["error"]["code"] == 190
    other = httpx.get(f"{fake_graph}/v21.0/1/message_templates", headers=AUTH)
    assert (other.status_code, other.json()["error"]["code"]) == (400, 100)


def test_a_status_change_answers_its_webhook_and_refuses_sends(fake_graph: str) -> None:
    set_catalogue(fake_graph, [template("promo", "Hi {{1}}")])
    assert send(fake_graph, "promo", "Ana").status_code == 200
    assert send(fake_graph, "promo").json()["error"]["code"] == 132000
    assert send(fake_graph, "nope", "Ana").json()["error"]["code"] == 132001
    changed = httpx.post(f"{fake_graph}/_fake/template-status",
                         json={"name": "promo", "language": "en_US", "event": "PAUSED"}).json()  # fmt: skip
    [update] = parse_meta_webhook(changed["webhook"]).template_statuses
    assert (update.waba_id, update.name, update.event) == (WABA, "promo", "PAUSED")
    assert send(fake_graph, "promo", "Ana").json()["error"]["code"] == 132015
