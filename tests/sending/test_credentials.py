"""The sender decrypts a connection's stored credentials once per connection (its client is cached), and a
credential made with a key that is not configured is never sent as is: the attempt fails, typed."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from libs.db.engine import Database
from libs.secrets import CannotDecryptError, Secrets, generate_key
from libs.sending.send import SenderContext
from tests.helpers import drain
from tests.sending.conftest import Outcomes, enqueue, execute, make_connection, make_messages, sends


def test_credentials_are_decrypted_once_per_connection(
    db: Database,
    broker: Any,
    context: SenderContext,
    fake_meta: str,
    worker: dramatiq.Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 20 messages of one Meta connection, and a count of decryptions
    calls: list[str] = []
    original = Secrets.decrypt

    def counting(self: Secrets, token: str) -> str:
        calls.append(token)
        return original(self, token)

    monkeypatch.setattr(Secrets, "decrypt", counting)
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, [f"165055500{n:02d}" for n in range(20)], body="hi")
    # When they are sent
    enqueue(broker, ids)
    drain(broker, worker)
    # Then every one reached the fake (which checks the clear token) and the token was decrypted once
    assert len(sends(fake_meta)) == 20
    assert len(calls) == 1


def test_a_token_made_with_a_missing_key_is_never_sent(
    db: Database, broker: Any, context: SenderContext, fake_meta: str, outcomes: Outcomes, worker: dramatiq.Worker
) -> None:
    # Given a connection whose token was encrypted under a key this process does not have
    company, connection = make_connection(db)
    foreign = Secrets([generate_key()]).encrypt("EAAG-token")
    execute(db, "UPDATE connections SET access_token = :t WHERE id = :id", t=foreign, id=connection)
    [message] = make_messages(db, company, connection, ["16505550100"], body="hi")
    # When its send runs, the attempt fails as CannotDecryptError, and nothing reached the provider
    enqueue(broker, [message])
    outcomes.wait(lambda o: len(o.of(message)) >= 1)
    assert isinstance(outcomes.of(message)[0].exception, CannotDecryptError)
    assert sends(fake_meta) == []
