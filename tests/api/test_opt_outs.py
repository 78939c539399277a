"""``/api/opt-outs``: a company's suppression list, its CSV import, and direct sends to listed numbers."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from libs.db.engine import Database
from tests.sending.conftest import execute


def test_add_list_remove(api: TestClient, company: dict[str, Any]) -> None:
    # When numbers are added (one twice, in two spellings)
    added = api.post(
        "/api/opt-outs", json={"company_id": company["id"], "phones": ["+55 11 98888-7777", "5511977776666"]}
    )
    again = api.post("/api/opt-outs", json={"company_id": company["id"], "phones": ["5511988887777"]})
    # Then each is on the list once
    assert added.status_code == 200 and added.json()["added"] == 2
    assert again.json() == {"company_id": company["id"], "added": 0, "already": 1}
    listed = api.get("/api/opt-outs", params={"company_id": company["id"]}).json()
    assert [row["phone"] for row in listed["opt_outs"]] == ["5511977776666", "5511988887777"]
    assert {row["source"] for row in listed["opt_outs"]} == {"api"}
    # And pages follow by number
    first = api.get("/api/opt-outs", params={"company_id": company["id"], "limit": 1}).json()
    assert first["has_more"] and first["after"] == "5511977776666"
    second = api.get("/api/opt-outs", params={"company_id": company["id"], "after": first["after"]}).json()
    assert [row["phone"] for row in second["opt_outs"]] == ["5511988887777"]
    # When one is removed
    assert api.delete("/api/opt-outs/5511977776666", params={"company_id": company["id"]}).status_code == 204
    # Then it is gone, and removing it again is a 404
    listed = api.get("/api/opt-outs", params={"company_id": company["id"]}).json()
    assert [row["phone"] for row in listed["opt_outs"]] == ["5511988887777"]
    assert api.delete("/api/opt-outs/5511977776666", params={"company_id": company["id"]}).status_code == 404


def test_bad_input_is_refused_with_a_reason(api: TestClient, company: dict[str, Any]) -> None:
    bad_phone = api.post("/api/opt-outs", json={"company_id": company["id"], "phones": ["12"]})
    assert bad_phone.status_code == 422 and "7 to 15 digits" in bad_phone.text
    unknown = api.post("/api/opt-outs", json={"company_id": 999_999, "phones": ["5511988887777"]})
    assert unknown.status_code == 422 and "company 999999 does not exist" in unknown.text
    assert api.get("/api/opt-outs").status_code == 400
    # not a phone number: not this route at all
    assert api.delete("/api/opt-outs/abc", params={"company_id": company["id"]}).status_code == 404


def test_csv_import_is_all_or_nothing(api: TestClient, company: dict[str, Any]) -> None:
    url = f"/api/opt-outs/import?company_id={company['id']}"
    headers = {"content-type": "text/csv"}
    # When a CSV with a bad row is imported
    bad = api.post(url, content=b"name,phone\nAna,5511911110001\nBob,not a number\n", headers=headers)
    # Then nothing is imported and the row is named
    assert bad.status_code == 422 and bad.json()["details"]["errors"][0]["row"] == 2
    assert api.get("/api/opt-outs", params={"company_id": company["id"]}).json()["opt_outs"] == []
    # And a CSV without a phone column is refused
    assert api.post(url, content=b"name\nAna\n", headers=headers).status_code == 400
    # When a good CSV is imported (with a repeated number)
    good = api.post(url, content=b"\xef\xbb\xbfPhone,name\n5511911110001,Ana\n+55 11 91111-0002,Bob\n5511911110001,A\n")
    # Then every number is on the list once, from the CSV
    assert good.status_code == 200 and good.json() == {"company_id": company["id"], "rows": 3, "added": 2, "already": 0}
    listed = api.get("/api/opt-outs", params={"company_id": company["id"]}).json()["opt_outs"]
    assert [(row["phone"], row["source"]) for row in listed] == [("5511911110001", "csv"), ("5511911110002", "csv")]


def test_direct_sends_to_an_opted_out_number(api: TestClient, db: Database, company: dict[str, Any]) -> None:
    # Given a number on the opt-out list, and a connection (window rule off)
    connection = company["connection"]
    phone = "5511988880000"
    api.post("/api/opt-outs", json={"company_id": company["id"], "phones": [phone]})
    message = {"company_id": company["id"], "connection_id": connection["id"], "to": phone, "text": "Promo!"}
    # When a message is sent to it
    refused = api.post("/api/messages", json=message)
    # Then it is refused with the reason
    assert refused.status_code == 422 and refused.json()["details"]["reason"] == "opted_out"
    # And a template too
    template = {**message, "text": None, "template": {"name": "promo", "language": "pt_BR"}}
    assert api.post("/api/messages", json=template).status_code == 422
    # When it says it is a transactional reply but the customer has not written in 24 h
    late = api.post("/api/messages", json={**message, "transactional": True})
    # Then it is refused as well
    assert late.status_code == 422 and late.json()["details"] == {
        "reason": "opted_out",
        "transactional": True,
        "window_open": False,
    }
    # When the customer has just written
    execute(
        db,
        "INSERT INTO service_windows (connection_id, wa_id, last_inbound_at) VALUES (:c, :w, now())",
        c=connection["id"],
        w=phone,
    )
    # Then a transactional reply goes, and a plain message still does not
    assert api.post("/api/messages", json={**message, "transactional": True}).status_code == 201
    assert api.post("/api/messages", json=message).status_code == 422


def test_a_company_sets_its_own_keywords(api: TestClient) -> None:
    created = api.post("/api/companies", json={"name": "Loja", "opt_out_keywords": ["chega"], "opt_in_keywords": []})
    assert created.status_code == 201
    assert (created.json()["opt_out_keywords"], created.json()["opt_in_keywords"]) == (["chega"], [])
    defaults = api.post("/api/companies", json={"name": "Outra"}).json()
    assert defaults["opt_out_keywords"] is None  # the defaults
    empty = api.post("/api/companies", json={"name": "X", "opt_out_keywords": [" "]})
    assert empty.status_code == 422 and "1 to 64 characters" in empty.text
    control = api.post("/api/companies", json={"name": "X", "opt_in_keywords": ["st\u0007op"]})
    assert control.status_code == 422 and "printable" in control.text
    nul = api.post("/api/companies", json={"name": "X", "opt_in_keywords": ["st\u0000op"]})
    assert nul.status_code == 422 and nul.json()["details"][0]["field"] == "opt_in_keywords.0"
