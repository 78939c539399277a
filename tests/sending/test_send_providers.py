"""Happy paths through each provider: what reaches the fake's wire, and what is recorded on our row."""

from __future__ import annotations

from typing import Any

import dramatiq

from libs.db.engine import Database
from libs.db.models import MessageStatus
from tests.helpers import drain
from tests.sending.conftest import (
    enqueue,
    make_baileys_connection,
    make_connection,
    make_messages,
    messages,
    sends,
)

TEMPLATE = {
    "name": "order_update",
    "language": "pt_BR",
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}],
}


def test_meta_text_template_and_reply_are_sent_as_documented(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a text, a template and a reply on one Meta connection
    company, connection = make_connection(db)
    [text] = make_messages(db, company, connection, ["16505551234"], body="hi there")
    [template] = make_messages(
        db, company, connection, ["16505551235"], body=None, type="template", payload={"template": TEMPLATE}
    )
    [reply] = make_messages(
        db, company, connection, ["16505551236"], body="sure", payload={"reply_to": "wamid.ORIGINAL"}
    )
    # When their jobs run
    enqueue(broker, [text, template, reply])
    drain(broker, worker)
    # Then each reached the Graph API once, carrying our message id as biz_opaque_callback_data
    by_ref = {int(s["client_ref"]): s for s in sends(fake_meta)}
    assert sorted(by_ref) == [text, template, reply]
    assert (by_ref[text]["type"], by_ref[text]["to"], by_ref[text]["body"]) == ("text", "16505551234", "hi there")
    assert by_ref[text]["reply_to"] is None
    assert by_ref[template]["type"] == "template"
    assert by_ref[template]["template"] == {
        "name": "order_update",
        "language": {"code": "pt_BR"},
        "components": TEMPLATE["components"],
    }
    assert (by_ref[reply]["body"], by_ref[reply]["reply_to"]) == ("sure", "wamid.ORIGINAL")
    # And each row is sent, with the wamid the fake answered, one attempt, a sending and a sent time
    for row in messages(db, [text, template, reply]):
        assert (row.status, row.external_id, row.attempts) == (MessageStatus.SENT, by_ref[row.id]["wamid"], 1)
        assert row.sending_at is not None and row.sent_at is not None and row.error_code is None


def test_baileys_text_and_reply_go_through_the_evolution_bridge(
    db: Database, broker: Any, sender: Any, fake_evolution: str, worker: dramatiq.Worker
) -> None:
    # Given a Baileys-bridge connection (Evolution API instance "main")
    company, connection = make_baileys_connection(db, fake_evolution)
    [text] = make_messages(db, company, connection, ["+5511999999999"], body="oi")
    [reply] = make_messages(db, company, connection, ["5511999999998"], body="claro", payload={"reply_to": "3EBQ"})
    # When their jobs run
    enqueue(broker, [text, reply])
    drain(broker, worker)
    # Then the bridge got each once (number without "+", the reply quoting the original key id)
    accepted = {s["number"]: s for s in sends(fake_evolution)}
    assert sorted(accepted) == ["5511999999998", "5511999999999"]
    assert (accepted["5511999999999"]["text"], accepted["5511999999999"]["quoted_id"]) == ("oi", None)
    assert (accepted["5511999999998"]["text"], accepted["5511999999998"]["quoted_id"]) == ("claro", "3EBQ")
    # And the bridge's key.id is stored as the external id
    text_row, reply_row = messages(db, [text, reply])
    assert (text_row.status, text_row.external_id) == (MessageStatus.SENT, accepted["5511999999999"]["key_id"])
    assert (reply_row.status, reply_row.external_id) == (MessageStatus.SENT, accepted["5511999999998"]["key_id"])
