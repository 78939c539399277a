"""Sends through the fake Graph API with a real worker: happy path, idempotency, deferral, dead letters."""

from __future__ import annotations

from typing import Any

import dramatiq

from libs import contracts
from libs.db.engine import Database
from libs.db.models import DeadLetter, Message, MessageStatus
from tests.helpers import drain
from tests.sending.conftest import configure, make_connection, make_messages, sends


def test_sent_once_with_wamid(db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker) -> None:
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(20)])
    for message_id in ids:
        contracts.SEND_NORMAL.send(contracts.SendMessage(message_id), broker=broker)
    contracts.SEND_NORMAL.send(contracts.SendMessage(ids[0]), broker=broker)  # a duplicate job
    drain(broker, worker)
    accepted = sends(fake_meta)
    assert len(accepted) == 20
    assert sorted(int(s["client_ref"]) for s in accepted) == sorted(ids)
    with db.session() as session:
        rows = session.query(Message).filter(Message.id.in_(ids)).all()
        assert {r.status for r in rows} == {MessageStatus.SENT}
        assert {r.external_id for r in rows} == {s["wamid"] for s in accepted}


def test_permanent_error_fails_and_dead_letters(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550000"])
    configure(fake_meta, forced_errors=[100])  # a fault (rule errors such as 131026 fail without a dead letter)
    contracts.SEND_NORMAL.send(contracts.SendMessage(message_id), broker=broker)
    drain(broker, worker)
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.status == MessageStatus.FAILED and row.error_code == 100
        letter = session.query(DeadLetter).one()
        assert letter.reason == "permanent" and letter.attempts == 1


def test_provider_throttle_defers_without_attempt(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    configure(fake_meta, forced_errors=[130429, 130429])
    contracts.SEND_NORMAL.send(contracts.SendMessage(message_id), broker=broker)
    drain(broker, worker)
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.status == MessageStatus.SENT
        assert row.attempts == 1
    assert len(sends(fake_meta)) == 1
