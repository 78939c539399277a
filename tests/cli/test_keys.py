"""``zapq keys create|list|revoke`` and ``zapq audit``: keys made on the command line work against the API, bad
input exits 2, unknown keys 3, and every change is in the audit log as ``cli``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.cli.conftest import zapq


def test_keys_create_list_revoke_and_audit(
    capsys: pytest.CaptureFixture[str], http: httpx.Client, company: dict[str, Any]
) -> None:
    # Given a key made on the command line for one company
    code, out, _ = zapq(capsys, "keys", "create", "--company", str(company["id"]), "--scopes",
                        "messages:read, connections:read", "--name", "crm", "--expires", "30d", "--json")  # fmt: skip
    assert code == 0
    created = json.loads(out)
    key = created["key"]
    # Then it reads its company through the API, and nothing else
    headers = {"authorization": f"Bearer {key}"}
    assert http.get("/api/connections", headers=headers).status_code == 200
    assert http.get("/api/queues", headers=headers).status_code == 403
    # And the list shows it without its text
    code, out, _ = zapq(capsys, "keys", "list")
    assert code == 0 and created["key_id"] in out and key not in out
    # When it is revoked
    code, out, _ = zapq(capsys, "keys", "revoke", created["key_id"])
    assert code == 0 and "revoked" in out
    # Then the audit log has both changes, by the CLI
    code, out, _ = zapq(capsys, "audit", "--since", "1h", "--json")
    entries = json.loads(out)
    assert [(e["actor"], e["action"], e["target"]) for e in entries[:2]] == [
        ("cli", "revoke_key", created["key_id"]),
        ("cli", "create_key", created["key_id"]),
    ]
    # And the API's own changes are there too, under the key that made them
    assert ("admin-token", "create_company") in {(e["actor"], e["action"]) for e in entries}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["keys", "create", "--scopes", "nope:x"], 2, "unknown scope(s): nope:x"),
        (["keys", "create", "--company", "1", "--scopes", "ops:write"], 2, "cannot be given to a company key"),
        (["keys", "create", "--scopes", "admin", "--expires", "someday"], 2, "give a duration"),
        (["keys", "revoke", "0123456789abcdef"], 3, "no key 0123456789abcdef"),
        (["audit", "--since", "yesterday-ish"], 2, "bad"),
    ],
)
def test_bad_input_exits_with_the_reason(
    capsys: pytest.CaptureFixture[str], api_url: str, argv: list[str], code: int, message: str
) -> None:
    got, _, err = zapq(capsys, *argv)
    assert got == code
    assert message in err
    _, listed, _ = zapq(capsys, "keys", "list", "--json")
    assert json.loads(listed) == []
