"""The README's "Message kinds" table: every example body, exactly as printed, is accepted by the API and stored
with its kind (so the copy-paste commands work)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.ops.processes import ROOT

SECTION = (ROOT / "README.md").read_text().split("## Message kinds", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"^\| ([^|]+) \| `send '(\{.*\})'` \|$", SECTION, re.MULTILINE)


def test_the_readme_lists_every_kind() -> None:
    kinds = {next(k for k in json.loads(body) if k not in ("company_id", "to", "context")) for _, body in EXAMPLES}
    assert kinds == {"text", "template", "image", "video", "audio", "document", "sticker", "interactive", "location",
                     "contacts", "reaction"}  # fmt: skip


@pytest.mark.parametrize(("name", "body"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_each_readme_example_is_accepted(api: TestClient, company: dict[str, Any], name: str, body: str) -> None:
    request = {**json.loads(body), "company_id": company["id"]}
    response = api.post("/api/messages", json=request)
    assert response.status_code == 201, response.text
