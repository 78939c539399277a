"""The sender connects to a bridge only through the outbound address guard in ``prod``: a bridge name that
resolves to loopback now (DNS rebinding after the save-time check) never gets the request or the bridge key,
unless allowlisted. (Save time: ``tests/connections/test_bridge_guard.py``.)"""

from __future__ import annotations

from typing import Any

import dramatiq
import httpx
import pytest

from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.errors import ProviderTransientError
from tests.helpers import drain
from tests.sending.conftest import Outcomes, enqueue, make_baileys_connection, make_messages, messages, sends


@pytest.fixture
def prod_sender(sender: Any) -> Any:
    """The sender's resources as ``prod`` builds them (its bridge client guarded); tests may change them further
    before the first job creates the context."""
    sender.settings = sender.settings.model_copy(update={"env": "prod"})
    return sender


def test_the_sender_never_connects_to_a_bridge_at_loopback_or_metadata(
    db: Database, broker: Any, prod_sender: Any, fake_evolution: str, outcomes: Outcomes, worker: dramatiq.Worker
) -> None:
    # Given bridges stored with such addresses: a name that now resolves to 127.0.0.1 (rebound after the
    # save-time check), or literals written before the guard existed
    port = httpx.URL(fake_evolution).port
    sent: dict[str, int] = {}
    for n, host in enumerate(("localhost", "127.0.0.1", "169.254.169.254")):
        company_id, connection = make_baileys_connection(db, f"http://{host}:{port}", instance=f"main-{n}")
        [sent[host]] = make_messages(db, company_id, connection, ["5511999999999"], body="oi")
    # When their sends run in prod
    enqueue(broker, list(sent.values()))
    outcomes.wait(lambda o: all(o.of(message) for message in sent.values()))
    # Then each attempt failed before any connection: the bridge never saw a request (nor its key)
    for host, message in sent.items():
        exception = outcomes.of(message)[0].exception
        assert isinstance(exception, ProviderTransientError), host
        assert "private or reserved" in str(exception.details), host
    assert sends(fake_evolution) == []
    for row in messages(db, list(sent.values())):
        assert row.status == MessageStatus.QUEUED and row.external_id is None


def test_an_allowlisted_bridge_is_reached_in_prod(
    db: Database, broker: Any, prod_sender: Any, fake_evolution: str, worker: dramatiq.Worker
) -> None:
    # Given the same loopback bridge, allowlisted
    prod_sender.settings = prod_sender.settings.model_copy(update={"outbound_allowlist": "127.0.0.0/8"})
    port = httpx.URL(fake_evolution).port
    company_id, connection = make_baileys_connection(db, f"http://localhost:{port}")
    [message] = make_messages(db, company_id, connection, ["5511999999999"], body="oi")
    # When its send runs, it goes through the guarded client and is sent
    enqueue(broker, [message])
    drain(broker, worker)
    assert [s["number"] for s in sends(fake_evolution)] == ["5511999999999"]
    assert messages(db, [message])[0].status == MessageStatus.SENT
