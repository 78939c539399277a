"""WhatsApp rules in the sender: the customer-service window is checked before calling Meta, and Meta's rule
errors end the message ``failed`` with a reason instead of a dead letter."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import httpx
import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.cli.main import main
from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.messages.status_store import StatusChange, apply_status
from libs.rules import reasons
from libs.settings import Settings
from tests.fakes.meta import DEFAULT_TOKEN
from tests.helpers import drain
from tests.sending.conftest import (
    configure,
    dead_letters,
    enqueue,
    execute,
    make_company_connection,
    make_connection,
    make_messages,
    messages,
    sends,
)

NUMBER_ID = "106540352242922"
DAY_S = 86_400


def enforced_connection(db: Database) -> tuple[int, int]:
    """A company and a Meta connection that enforces the customer-service window (the default)."""
    return make_company_connection(
        db, provider="meta", phone_number_id=NUMBER_ID, access_token=DEFAULT_TOKEN, service_window="enforce"
    )


def customer_wrote(db: Database, fake_meta: str, connection_id: int, wa_id: str, seconds_ago: float) -> None:
    """The customer last wrote ``seconds_ago``: as zapq's ingest recorded it, and as Meta knows it."""
    execute(
        db,
        "INSERT INTO service_windows (connection_id, wa_id, last_inbound_at) "
        "VALUES (:c, :w, now() - make_interval(secs => :s))",
        c=connection_id,
        w=wa_id,
        s=seconds_ago,
    )
    at = time.time() - seconds_ago
    httpx.post(f"{fake_meta}/_fake/inbound", json={"phone_number_id": NUMBER_ID, "from": wa_id, "at": at})


def calls(fake_meta: str) -> int:
    """Every ``/messages`` request the fake Graph API saw."""
    return int(httpx.get(f"{fake_meta}/_fake/calls").json()["calls"])


def test_free_form_after_the_window_closed_fails_without_calling_meta(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a Graph API that knows the 24 h rule, and three contacts: one wrote 24 h + 1 s ago, one an hour
    # ago, one never
    configure(fake_meta, service_window_s=DAY_S)
    company, connection = enforced_connection(db)
    customer_wrote(db, fake_meta, connection, "16505550001", DAY_S + 1)
    customer_wrote(db, fake_meta, connection, "16505550002", 3600)
    late, fresh, stranger = make_messages(db, company, connection, ["16505550001", "16505550002", "16505550003"])
    # And a template to the contact whose window closed
    [template] = make_messages(
        db, company, connection, ["16505550001"], body=None, type="template",
        payload={"template": {"name": "hello_world", "language": "en_US"}},
    )  # fmt: skip
    # When their jobs run
    enqueue(broker, [late, fresh, stranger, template])
    drain(broker, worker)
    # Then the free-form ones outside the window failed with the reason, and Meta was called only for the
    # two messages the window allows
    rows = {row.id: row for row in messages(db, [late, fresh, stranger, template])}
    for refused in (late, stranger):
        assert rows[refused].status == MessageStatus.FAILED
        assert rows[refused].failure_reason == reasons.OUTSIDE_SERVICE_WINDOW
        assert rows[refused].error_code is None and rows[refused].sent_at is None
    assert "closed at" in (rows[late].error_title or "")
    assert "never written" in (rows[stranger].error_title or "")
    assert rows[fresh].status == MessageStatus.SENT and rows[template].status == MessageStatus.SENT
    assert calls(fake_meta) == 2
    assert sorted(s["to"] for s in sends(fake_meta)) == ["16505550001", "16505550002"]
    # And no dead letter was written (a rule is not a fault)
    assert dead_letters(db) == []


def test_window_off_sends_free_form_to_anyone(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a connection with the window rule off (a test number) and a contact who never wrote
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550009"])
    # When the job runs
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then it was sent
    [row] = messages(db, [message_id])
    assert row.status == MessageStatus.SENT and row.failure_reason is None


RULE_CODES = {
    131047: reasons.OUTSIDE_SERVICE_WINDOW,
    131049: reasons.MARKETING_LIMIT,
    131026: reasons.UNDELIVERABLE,
    132000: reasons.TEMPLATE_REJECTED,
    471: reasons.POLICY,
}


def test_meta_rule_errors_fail_with_their_reason_and_no_dead_letter(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given a Graph API refusing five sends, each under one rule, then one with a real fault (bad parameter)
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(len(RULE_CODES) + 1)])
    configure(fake_meta, forced_errors=[*RULE_CODES, 100])
    # When their jobs run
    enqueue(broker, ids)
    drain(broker, worker)
    # Then each rule-refused message failed once with Meta's code and its reason
    rows = messages(db, ids)
    by_code = {row.error_code: row for row in rows}
    assert set(by_code) == {*RULE_CODES, 100}
    for code, reason in RULE_CODES.items():
        assert (by_code[code].status, by_code[code].attempts) == (MessageStatus.FAILED, 1)
        assert by_code[code].failure_reason == reason
    # And only the fault was dead-lettered
    [letter] = dead_letters(db)
    assert letter.kwargs["message_id"] == by_code[100].id and by_code[100].failure_reason is None


@pytest.mark.parametrize("code", [131049, 131047])
def test_a_rule_failure_reported_by_webhook_keeps_its_reason(code: int, db: Database) -> None:
    # Given a sent message
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550010"])
    execute(db, "UPDATE messages SET status = 'sent', external_id = 'wamid.X' WHERE id = :id", id=message_id)
    # When Meta reports it failed under a rule (the per-user marketing limit arrives this way)
    with db.session() as session:
        change = StatusChange("wamid.X", "failed", code=code, title="rule", connection_id=connection)
        assert apply_status(session, change) == "applied"
    # Then the message carries the rule's reason
    [row] = messages(db, [message_id])
    assert (row.status, row.failure_reason) == (MessageStatus.FAILED, reasons.RULE_CODES[code])


def test_rule_failures_are_counted_per_reason_in_stats_and_metrics(
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two sends refused by the per-user marketing limit and one by a template problem
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, ["16505550021", "16505550022", "16505550023"])
    configure(fake_meta, forced_errors=[131049, 131049, 132001])
    enqueue(broker, ids)
    drain(broker, worker)
    # When the operator looks at the stats
    assert main(["stats"]) == 0
    out = capsys.readouterr().out
    # Then each reason is counted, and nothing was dead-lettered
    assert "marketing_limit: 2" in out and "template_rejected: 1" in out
    assert dead_letters(db) == []
    # And /metrics exports the same counts (every reason listed, zero when none)
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        text = client.get("/metrics").text
    assert 'zapq_rule_failures{reason="marketing_limit"} 2.0' in text
    assert 'zapq_rule_failures{reason="template_rejected"} 1.0' in text
    assert 'zapq_rule_failures{reason="outside_service_window"} 0.0' in text
