"""``zapq send``: one message from the command line, through the real API into Postgres and Redis.

The API is served by uvicorn on a free port in a thread, on this session's database and Redis namespace
(``tests/cli/conftest.py``); the CLI runs in-process and talks to it over HTTP, as it would in production.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from libs import contracts
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.db.models import Message, MessageStatus, Priority
from libs.ops.processes import free_port
from libs.settings import Settings
from tests.cli.conftest import zapq
from tests.helpers import queue_length


def send(capsys: pytest.CaptureFixture[str], company: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    """``zapq send --company ID --to +1 415 555 0100 extra…``."""
    return zapq(capsys, "send", "--company", str(company["id"]), "--to", "+1 415 555 0100", *extra)


def waiting(broker: Any, settings: Settings) -> dict[str, int]:
    """Jobs waiting in each tier's queue."""
    return {tier: queue_length(broker.client, settings.redis_namespace, q) for tier, q in contracts.TIER_QUEUES.items()}


def test_an_urgent_text_is_stored_queued_and_its_job_waits_on_the_urgent_queue(
    capsys: pytest.CaptureFixture[str],
    company: dict[str, Any],
    db: Database,
    broker: Any,
    settings: Settings,
    http: httpx.Client,
) -> None:
    # When an urgent text is sent
    code, out, err = send(capsys, company, "--text", "Your code is 1234", "--priority", "urgent")
    # Then the message id and its job id are printed
    assert (code, err) == (EXIT_OK, ""), err
    message_id, job_id = int(out.split()[1]), out.split()[-1]
    assert out == f"message {message_id} queued (urgent), job {job_id}\n"
    # And the message is stored queued, urgent, on the company's connection, with the number as digits
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None
        assert (row.status, row.priority, row.body) == (MessageStatus.QUEUED, Priority.URGENT, "Your code is 1234")
        assert (row.recipient, row.connection_id) == ("14155550100", company["connection"]["id"])
    # And its send job, and nothing else, waits on messages.urgent
    assert waiting(broker, settings) == {"urgent": 1, "normal": 0, "low": 0}
    job = http.get(f"/api/jobs/{job_id}").json()
    assert (job["state"], job["queue"]) == ("waiting", contracts.MESSAGES_URGENT)


def test_the_same_idempotency_key_twice_creates_one_message(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], db: Database, broker: Any, settings: Settings
) -> None:
    # When the same send is repeated with one Idempotency-Key, then once with another
    argv = ["--text", "Order 42 shipped", "--json"]
    first = json.loads(send(capsys, company, *argv, "--idempotency-key", "order-42")[1])
    again = json.loads(send(capsys, company, *argv, "--idempotency-key", "order-42")[1])
    other = json.loads(send(capsys, company, *argv, "--idempotency-key", "order-43")[1])
    # Then the repeat answers the first message, and only two messages and two jobs exist
    assert again == first and other["id"] != first["id"]
    assert first["idempotency_key"] == "order-42" and first["priority"] == "normal"
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(Message)).scalar_one() == 2
    assert waiting(broker, settings) == {"urgent": 0, "normal": 2, "low": 0}


def test_a_template_with_its_language_and_variables(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], broker: Any, settings: Settings
) -> None:
    # When a low-priority template is sent on a named connection, with two body parameters
    argv = ["--template", "order_update", "--language", "pt_BR", "--variable", "Ana", "--variable", "42"]
    connection = ["--connection", str(company["connection"]["id"])]
    code, out, err = send(capsys, company, *argv, *connection, "--priority", "low", "--json")
    # Then the API stored a template message whose components carry the values in order
    assert code == EXIT_OK, err
    message = json.loads(out)
    assert (message["type"], message["status"], message["priority"]) == ("template", "queued", "low")
    assert message["connection_id"] == company["connection"]["id"] and message["job_id"]
    assert message["payload"] == {
        "template": {
            "name": "order_update",
            "language": "pt_BR",
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "42"}]}
            ],
        }
    }
    assert waiting(broker, settings) == {"urgent": 0, "normal": 0, "low": 1}


def test_an_unknown_company_exits_2_with_the_api_reason(
    capsys: pytest.CaptureFixture[str], api_url: str, broker: Any, settings: Settings
) -> None:
    code, out, err = zapq(capsys, "send", "--company", "999", "--to", "14155550100", "--text", "Hi")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "zapq: company 999 does not exist (HTTP 409)\n"
    assert waiting(broker, settings) == {"urgent": 0, "normal": 0, "low": 0}


def test_bad_input_exits_2_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], broker: Any, settings: Settings
) -> None:
    # Caught by the CLI: both contents, neither, template options with a text, an unknown priority
    code, out, err = send(capsys, company, "--text", "Hi", "--template", "promo")
    assert (code, out) == (EXIT_USAGE, "") and "--template: not allowed with argument --text" in err
    code, _, err = send(capsys, company)
    assert code == EXIT_USAGE and "one of the arguments --text --template is required" in err
    code, _, err = send(capsys, company, "--text", "Hi", "--variable", "Ana")
    assert code == EXIT_USAGE and "--variable go with --template" in err
    code, _, err = send(capsys, company, "--text", "Hi", "--priority", "asap")
    assert code == EXIT_USAGE and "invalid choice: 'asap'" in err
    # And the API's own validation of a bad phone number
    code, _, err = zapq(capsys, "send", "--company", str(company["id"]), "--to", "12", "--text", "Hi")
    assert code == EXIT_USAGE and "7 to 15 digits" in err and "(HTTP 422)" in err
    assert waiting(broker, settings) == {"urgent": 0, "normal": 0, "low": 0}


def test_an_api_that_is_down_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = zapq(capsys, "send", "--company", "1", "--to", "14155550100", "--text", "Hi", "--api-url", url)
    assert (code, out) == (EXIT_FAILED, "")
    assert f"cannot reach the zapq API at {url}" in err


def test_retry_requeues_a_failed_message_and_refuses_others(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], db: Database, broker: Any, settings: Settings
) -> None:
    # Given a message the sender failed for good, and one still queued
    failed = json.loads(send(capsys, company, "--text", "Order 42 shipped", "--json")[1])
    queued = json.loads(send(capsys, company, "--text", "Order 43 shipped", "--json")[1])
    with db.session() as session:
        session.execute(
            update(Message)
            .where(Message.id == failed["id"])
            .values(status=MessageStatus.FAILED, error_code=131026, error_title="InvalidRecipientError", attempts=1)
        )
    broker.client.delete(f"{settings.redis_namespace}:{contracts.MESSAGES}")  # the jobs ran long ago
    # When the failed one is retried from the command line
    code, out, err = zapq(capsys, "retry", str(failed["id"]))
    # Then it is queued again with its failure kept, and its send job waits on its tier's queue
    assert (code, err) == (EXIT_OK, ""), err
    assert out == f"message {failed['id']} queued again (1 earlier failure(s)), job {failed['job_id']}\n"
    with db.session() as session:
        row = session.get(Message, failed["id"])
        assert row is not None and (row.status, row.attempts, row.error_code) == (MessageStatus.QUEUED, 0, None)
        assert [entry["error_code"] for entry in row.history] == [131026]
    assert waiting(broker, settings) == {"urgent": 0, "normal": 1, "low": 0}
    # And a message that is not failed, or does not exist, is refused with the API's reason
    code, out, err = zapq(capsys, "retry", str(queued["id"]))
    assert (code, out) == (EXIT_USAGE, "") and "is queued; only a failed message can be retried" in err
    assert zapq(capsys, "retry", "999999")[0] == EXIT_NOT_FOUND
