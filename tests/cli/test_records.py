"""``zapq company|connection|message|job|dev webhook``: their answers and their failure paths (exit codes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.ops.processes import free_port
from tests.cli.conftest import zapq


def test_company_and_connection_round_trip(capsys: pytest.CaptureFixture[str], api_url: str) -> None:
    code, out, _ = zapq(capsys, "company", "create", "--name", "Acme", "--campaign-weight", "3")
    assert code == EXIT_OK
    company = out.strip()
    listed = json.loads(zapq(capsys, "company", "list", "--json")[1])
    assert [(c["id"], c["name"], c["campaign_weight"]) for c in listed] == [(int(company), "Acme", 3)]
    code, out, _ = zapq(
        capsys, "connection", "create", "--company", company, "--provider", "meta",
        "--phone-number-id", "999", "--access-token", "secret-token-x",
    )  # fmt: skip
    assert code == EXIT_OK
    connection = out.strip()
    code, out, _ = zapq(capsys, "connection", "patch", connection, "--rate-per-second", "20", "--json")
    assert code == EXIT_OK and json.loads(out)["rate_per_second"] == 20
    code, out, _ = zapq(capsys, "connection", "list")
    assert code == EXIT_OK and "secret-token-x" not in out and connection in out


def test_refusals_have_exit_codes_and_reasons(capsys: pytest.CaptureFixture[str], api_url: str) -> None:
    # A meta connection without its token: refused by the API with the reason (exit 2)
    company = zapq(capsys, "company", "create", "--name", "Acme")[1].strip()
    code, _, err = zapq(capsys, "connection", "create", "--company", company, "--provider", "meta")
    assert code == EXIT_USAGE and "needs phone_number_id, access_token" in err
    # A patch with nothing to change: refused before any call (exit 2)
    code, _, err = zapq(capsys, "connection", "patch", "1")
    assert code == EXIT_USAGE and "nothing to change" in err
    # Unknown ids: exit 3
    assert zapq(capsys, "message", "424242")[0] == EXIT_NOT_FOUND
    code, _, err = zapq(capsys, "job", "424242")
    assert code == EXIT_NOT_FOUND and "neither a job id nor a message id" in err
    assert zapq(capsys, "connection", "patch", "424242", "--name", "x")[0] == EXIT_NOT_FOUND


def test_job_of_an_inbound_message_says_what_it_found(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], http: Any
) -> None:
    sent = http.post("/api/messages", json={"company_id": company["id"], "to": "+5511988887777", "text": "hi"}).json()
    code, out, _ = zapq(capsys, "job", str(sent["id"]), "--json")
    found = json.loads(out)
    assert code == EXIT_OK and (found["found"], found["message_id"], found["job_id"]) == (
        "message", sent["id"], sent["job_id"],
    )  # fmt: skip
    assert found["state"] == "waiting" and found["queue"] == "messages"
    code, out, _ = zapq(capsys, "message", str(sent["id"]))
    assert code == EXIT_OK and f"job: {sent['job_id']}" in out and "contact: 5511988887777" in out
    assert "timeline:" in out and "created" in out and "queued" in out


def test_dev_webhook_failure_paths(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = zapq(capsys, "dev", "webhook", "--text", "hi", "--from", "12")
    assert code == EXIT_USAGE and "--from must be a phone number" in err
    code, _, err = zapq(capsys, "dev", "webhook", "--text", "hi", "--ingest-url", "ftp://x")
    assert code == EXIT_USAGE and "bad ingest URL" in err
    code, _, err = zapq(capsys, "dev", "webhook", "--text", "hi", "--ingest-url", f"http://127.0.0.1:{free_port()}")
    assert code == EXIT_FAILED and "cannot reach the webhook-ingest API" in err
