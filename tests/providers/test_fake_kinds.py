"""The fake Graph API checks every kind's body as Meta documents it: what zapq sends passes, the rest is 400/100."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import meta_wire
from tests.sending.test_send_kinds import KINDS


def _send(kind: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": "16505551234", "type": kind, kind: content, **extra}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_documented_bodies_pass(name: str) -> None:
    [(kind, content)] = KINDS[name].items()
    if kind == "template":
        content = {**content, "language": {"code": "en_US"}}
        content["components"] = [{**c, "index": str(c["index"])} if "index" in c else c for c in content["components"]]
    assert meta_wire.validate_payload(_send(kind, content)) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_send("image", {"link": "ftp://x"}), "http(s)"),
        (_send("image", {"id": "1", "link": "https://x.io/a"}), "exactly one of id or link"),
        (_send("audio", {"id": "1", "caption": "c"}), "does not take"),
        (_send("document", {"id": "1", "caption": "c" * 1025}), "1024"),
        (_send("interactive", {"type": "button", "body": {"text": "b"}, "action": {"buttons": []}}), "1 to 3"),
        (_send("interactive", {"type": "list", "body": {"text": "b"}, "header": {"type": "image", "image": {"id": "1"}},
                               "action": {"button": "B", "sections": [{"rows": [{"id": "r", "title": "t"}]}]}}),
         "text only"),
        (_send("interactive", {"type": "cta_url", "body": {"text": "b"},
                               "action": {"name": "cta_url", "parameters": {"display_text": "x" * 21, "url": "https://x"}}}),
         "display_text"),
        (_send("location", {"latitude": 100, "longitude": 0}), "in range"),
        (_send("contacts", [{"name": {}}]), "formatted_name"),
        (_send("reaction", {"message_id": "wamid.X", "emoji": "👍"}, context={"message_id": "wamid.Y"}), "no context"),
        (_send("template", {"name": "t", "language": {"code": "en"}, "components": [{"type": "button",
               "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "x"}]}]}), "string index"),
        (_send("carousel", {}), "not supported"),
    ],
)  # fmt: skip
def test_bodies_meta_refuses_are_named(body: dict[str, Any], reason: str) -> None:
    problem = meta_wire.validate_payload(body)
    assert problem is not None and reason in problem, problem
