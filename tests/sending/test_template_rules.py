"""Issue 18, item 6, for templates: Meta's 132xxx template errors — answered to the send, or reported by a status
webhook — end the message ``failed`` with ``template_rejected``, counted per reason, with no dead letter.

The fake Graph API checks template sends against its catalogue as Meta does (``tests.fakes.meta_templates``):
these are the sends zapq lets through because the connection's catalogue never synced."""

from __future__ import annotations

from typing import Any

import dramatiq
import httpx
import pytest

from libs.cli.main import main
from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.messages.status_store import StatusChange, apply_status
from libs.rules import reasons
from tests.fakes.meta_templates import template
from tests.helpers import drain
from tests.sending.conftest import dead_letters, enqueue, execute, make_connection, make_messages, messages, sends


def template_message(db: Database, company: int, connection: int, to: str, name: str, *body: str) -> int:
    """A queued template message with ``body`` parameters; its id."""
    components = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in body]}] if body else []
    payload = {"template": {"name": name, "language": "en_US", "components": components}}
    [message_id] = make_messages(db, company, connection, [to], body=None, type="template", payload=payload)
    return message_id


def test_template_errors_from_meta_fail_the_message_with_template_rejected(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a WABA whose catalogue Meta checks sends against: one template needing 2 body parameters, one paused
    catalogue = [template("order_update", "Hi {{1}}, order {{2}}"), template("spring_sale", "Hi", status="PAUSED")]
    httpx.post(f"{fake_meta}/_fake/templates", json={"templates": catalogue}).raise_for_status()
    company, connection = make_connection(db)
    # And four template sends zapq did not check: unknown, one parameter short, paused, and a good one
    unknown = template_message(db, company, connection, "16505550031", "no_such_template")
    short = template_message(db, company, connection, "16505550032", "order_update", "Ana")
    paused = template_message(db, company, connection, "16505550033", "spring_sale")
    good = template_message(db, company, connection, "16505550034", "order_update", "Ana", "A1")
    # When their jobs run
    enqueue(broker, [unknown, short, paused, good])
    drain(broker, worker)
    # Then Meta's refusals (132001, 132000, 132015) failed their messages once, each with template_rejected
    rows = {row.id: row for row in messages(db, [unknown, short, paused, good])}
    for message_id, code in ((unknown, 132001), (short, 132000), (paused, 132015)):
        row = rows[message_id]
        assert (row.status, row.error_code, row.attempts) == (MessageStatus.FAILED, code, 1)
        assert row.failure_reason == reasons.TEMPLATE_REJECTED
    assert rows[good].status == MessageStatus.SENT and [s["to"] for s in sends(fake_meta)] == ["16505550034"]
    # And nothing was dead-lettered; the stats count them under their reason
    assert dead_letters(db) == []
    assert main(["stats"]) == 0
    assert "template_rejected: 3" in capsys.readouterr().out


@pytest.mark.parametrize("code", [132000, 132001, 132015, 132016])
def test_a_template_failure_reported_by_webhook_is_template_rejected(code: int, db: Database) -> None:
    # Given a sent template message
    company, connection = make_connection(db)
    message_id = template_message(db, company, connection, "16505550040", "order_update")
    execute(db, "UPDATE messages SET status = 'sent', external_id = 'wamid.T' WHERE id = :id", id=message_id)
    # When Meta reports it failed with a template error
    with db.session() as session:
        change = StatusChange("wamid.T", "failed", code=code, title="template", connection_id=connection)
        assert apply_status(session, change) == "applied"
    # Then it failed with template_rejected, and nothing was dead-lettered
    [row] = messages(db, [message_id])
    assert (row.status, row.failure_reason) == (MessageStatus.FAILED, reasons.TEMPLATE_REJECTED)
    assert dead_letters(db) == []
