"""``zapq endpoints …``: webhook endpoints from the command line, through the real API, delivering for real.

The API is served by uvicorn in a thread (``tests/cli/conftest.py``); the CLI runs in-process and talks to it
over HTTP. Deliveries are made by a real Dramatiq worker of the event dispatcher to a fake CRM on loopback that
verifies every signature with ``standardwebhooks``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.ops.processes import free_port
from libs.settings import Settings
from tests.cli.conftest import serving, zapq
from tests.events.conftest import crm, dispatcher_worker, policy  # noqa: F401 - fixtures
from tests.fakes.crm import CrmReceiver
from tests.faults.support import wait_until

DEADLINE_S = 30.0


@pytest.fixture
def served(settings: Settings, db: Database) -> Iterator[str]:
    """A fresh API per test, started after the tables were emptied (overrides the module-wide one): its feed
    listener starts from the event counters as they are now."""
    with serving(settings) as url:
        yield url


def add(capsys: pytest.CaptureFixture[str], company: dict[str, Any], url: str, *extra: str) -> tuple[int, str]:
    """``zapq endpoints add``; the endpoint id and its secret, read from what it printed."""
    code, out, err = zapq(capsys, "endpoints", "add", "--company", str(company["id"]), "--url", url, *extra)
    assert code == EXIT_OK, err
    first, secret, note = out.splitlines()
    assert first == f"endpoint {first.split()[1]} {url}"
    assert note == "(shown this once: store it where your receiver reads it)"
    return int(first.split()[1]), secret.removeprefix("secret ")


def listed(capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, Any]]:
    """``zapq endpoints list --json``."""
    code, out, err = zapq(capsys, "endpoints", "list", "--json", *extra)
    assert code == EXIT_OK, err
    return list(json.loads(out))


def send(http: httpx.Client, company: dict[str, Any], text: str) -> int:
    """A message created through the API (its ``message.created`` event goes to the endpoints)."""
    response = http.post("/api/messages", json={"company_id": company["id"], "to": "5511988887777", "text": text})
    assert response.status_code in (200, 201, 202), response.text
    return int(response.json()["id"])


def test_add_prints_the_id_and_the_secret_once_and_list_shows_the_endpoint(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], http: httpx.Client
) -> None:
    # When an endpoint is added with a type filter, a description and its limits
    argv = ["--types", "message.received,message.status", "--description", "CRM", "--rate", "50", "--in-flight", "8"]
    endpoint_id, secret = add(capsys, company, "https://crm.example.com/hooks/zapq", *argv)
    # Then its secret is a Standard Webhooks secret, and the API never shows it again
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]+", secret), secret
    stored = http.get(f"/api/webhook-endpoints/{endpoint_id}").json()
    assert "secret" not in stored and secret not in json.dumps(stored)
    assert (stored["rate_per_second"], stored["max_in_flight"], stored["description"]) == (50, 8, "CRM")
    # And the list shows it enabled, with its types, no backlog and no attempts yet
    code, out, _ = zapq(capsys, "endpoints", "list", "--company", str(company["id"]))
    header, row = out.splitlines()
    assert code == EXIT_OK
    assert header.split() == ["ID", "COMPANY", "URL", "TYPES", "STATE", "BACKLOG", "FAILED", "SUCCESS_24H",
                              "LAST_FAILURE"]  # fmt: skip
    assert row.split() == [str(endpoint_id), str(company["id"]), "https://crm.example.com/hooks/zapq",
                           "message.received,message.status", "enabled", "0", "0", "-", "-"]  # fmt: skip
    assert secret not in out
    # And another company's filter shows nothing
    assert listed(capsys, "--company", str(company["id"] + 1)) == []


def test_a_long_url_is_cut_in_the_table_without_widening_it(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any]
) -> None:
    # Given an endpoint with a 90-character URL
    url = "https://crm.example.com/" + "x" * 60 + "/hooks"
    add(capsys, company, url)
    # When listed
    code, out, _ = zapq(capsys, "endpoints", "list")
    header, row = out.splitlines()
    # Then the URL column shows its first 60 characters and is no wider; no line ends in padding
    assert code == EXIT_OK
    assert row.split()[2] == url[:60]
    assert header.index("TYPES") == row.index(url[:60]) + 60 + 2
    assert not header.endswith(" ") and not row.endswith(" ")


@pytest.mark.usefixtures("dispatcher_worker", "policy")
def test_deliveries_show_in_the_list_and_replay_delivers_again_with_the_same_webhook_id(
    capsys: pytest.CaptureFixture[str],
    company: dict[str, Any],
    http: httpx.Client,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - the fixture
) -> None:
    receiver, url = crm
    # Given an endpoint whose receiver failed one delivery with a 500 and then accepted two events
    endpoint_id, secret = add(capsys, company, url + "/hooks/zapq")
    receiver.config.secrets = [secret]
    receiver.config.script = [500]
    send(http, company, "one")
    send(http, company, "two")
    first, second = receiver.wait_for(2, timeout=DEADLINE_S)
    # Then the list shows the last failure and the success rate of the last 24 hours (2 of 3 attempts)
    [row] = listed(capsys)
    assert (row["backlog"], row["attempts_24h"], row["success_rate_24h"]) == (0, 3, 0.6667)
    assert row["last_failure_reason"] == "HTTP 500"
    code, out, _ = zapq(capsys, "endpoints", "list")
    assert "66.7% of 3" in out and "HTTP 500" in out

    # When the first event is replayed
    code, out, err = zapq(capsys, "endpoints", "replay", str(endpoint_id), "--event", first.webhook_id)
    # Then one delivery is queued, and the receiver gets it again under the same webhook-id
    assert (code, out, err) == (EXIT_OK, f"queued 1 deliveries to endpoint {endpoint_id}\n", "")
    _wait_arrivals(receiver, 4)
    assert receiver.arrivals[-1] == first.webhook_id

    # When everything since an hour ago is replayed
    code, out, _ = zapq(capsys, "endpoints", "replay", str(endpoint_id), "--since", "1h")
    # Then both events are queued again and arrive again, in order
    assert (code, out) == (EXIT_OK, f"queued 2 deliveries to endpoint {endpoint_id}\n")
    _wait_arrivals(receiver, 6)
    assert receiver.arrivals[-2:] == [first.webhook_id, second.webhook_id]
    # And with --only-failed nothing is queued (none failed)
    code, out, _ = zapq(capsys, "endpoints", "replay", str(endpoint_id), "--since", "1h", "--only-failed", "--json")
    assert code == EXIT_OK and json.loads(out) == {"queued": 0}


def _wait_arrivals(receiver: CrmReceiver, count: int) -> None:
    """Wait until the receiver has seen ``count`` verified requests (duplicates included)."""
    wait_until(lambda: len(receiver.arrivals) >= count, timeout=DEADLINE_S, what=lambda: f"{receiver.arrivals}")


def test_test_sends_a_signed_ping_and_exits_1_when_the_endpoint_refuses(
    capsys: pytest.CaptureFixture[str],
    company: dict[str, Any],
    crm: tuple[CrmReceiver, str],  # noqa: F811
) -> None:
    receiver, url = crm
    endpoint_id, secret = add(capsys, company, url + "/hooks/zapq")
    receiver.config.secrets = [secret]
    # When the receiver accepts the ping
    code, out, err = zapq(capsys, "endpoints", "test", str(endpoint_id))
    # Then it says so and exits 0; the receiver verified its signature
    assert code == EXIT_OK, err
    assert re.fullmatch(rf"ping ping_[0-9a-f]+ to endpoint {endpoint_id}: ok, HTTP 200 in \d+ ms\n(.*\n)?", out), out
    [ping] = receiver.wait_for(1, timeout=DEADLINE_S)
    assert ping.type == "ping" and ping.data == {"endpoint_id": endpoint_id, "company_id": company["id"]}
    # When it answers 503
    receiver.config.status = 503
    code, out, _ = zapq(capsys, "endpoints", "test", str(endpoint_id), "--json")
    # Then the command fails (exit 1) with what the endpoint answered
    result = json.loads(out)
    assert code == EXIT_FAILED and (result["ok"], result["status_code"]) == (False, 503)
    # When nothing listens at the endpoint's URL
    code, out, _ = zapq(capsys, "endpoints", "add", "--company", str(company["id"]), "--url",
                        f"http://127.0.0.1:{free_port()}/hooks")  # fmt: skip
    dead = int(out.split()[1])
    code, out, _ = zapq(capsys, "endpoints", "test", str(dead))
    assert code == EXIT_FAILED and f"to endpoint {dead}: FAILED, ConnectError" in out


def test_disable_enable_rotate_and_remove(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], http: httpx.Client
) -> None:
    endpoint_id, secret = add(capsys, company, "https://crm.example.com/hooks")
    # disable: the list shows why
    code, out, _ = zapq(capsys, "endpoints", "disable", str(endpoint_id))
    assert (code, out) == (EXIT_OK, f"endpoint {endpoint_id} disabled: disabled through the API\n")
    assert listed(capsys)[0]["enabled"] is False
    # enable
    assert zapq(capsys, "endpoints", "enable", str(endpoint_id)) == (EXIT_OK, f"endpoint {endpoint_id} enabled\n", "")
    # rotate-secret: a new secret, printed once; the old one keeps signing for a day
    code, out, _ = zapq(capsys, "endpoints", "rotate-secret", str(endpoint_id))
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0] == f"endpoint {endpoint_id}: new secret"
    new_secret = lines[1].removeprefix("secret ")
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert lines[3].startswith("the previous secret keeps signing too until ")
    # rm, then rm again: not found
    assert zapq(capsys, "endpoints", "rm", str(endpoint_id)) == (EXIT_OK, f"endpoint {endpoint_id} removed\n", "")
    assert http.get(f"/api/webhook-endpoints/{endpoint_id}").status_code == 404
    code, out, err = zapq(capsys, "endpoints", "rm", str(endpoint_id))
    assert (code, out, err) == (EXIT_NOT_FOUND, "", f"zapq: no webhook endpoint {endpoint_id} (HTTP 404)\n")


def test_unknown_ids_exit_3(capsys: pytest.CaptureFixture[str], company: dict[str, Any]) -> None:
    for argv in (["test", "999"], ["enable", "999"], ["disable", "999"], ["rotate-secret", "999"],
                 ["replay", "999", "--since", "1h"]):  # fmt: skip
        code, out, err = zapq(capsys, "endpoints", *argv)
        assert (code, out, err) == (EXIT_NOT_FOUND, "", "zapq: no webhook endpoint 999 (HTTP 404)\n"), argv
    # an event of the right shape that does not exist (for this endpoint): the endpoint exists, the body names
    # an event that does not — a bad input (HTTP 422), exit 2
    endpoint_id, _ = add(capsys, company, "https://crm.example.com/hooks")
    code, _, err = zapq(capsys, "endpoints", "replay", str(endpoint_id), "--event", "evt_00000000000003e7")
    assert code == EXIT_USAGE and err.endswith("(HTTP 422)\n")
    assert "no published event evt_00000000000003e7 for this endpoint" in err


def test_bad_input_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str], company: dict[str, Any]) -> None:
    argv = ["endpoints", "add", "--company", str(company["id"])]
    # Refused by the API: an unknown event type, a URL that is not http(s), a company that does not exist
    code, out, err = zapq(capsys, *argv, "--url", "https://crm.example.com/h", "--types", "message.received,nope")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "zapq: event_types: unknown event type(s) nope (HTTP 422)\n"
    code, _, err = zapq(capsys, *argv, "--url", "ftp://crm.example.com/h")
    assert code == EXIT_USAGE and err.startswith("zapq: url: ") and "(HTTP 422)" in err
    code, _, err = zapq(capsys, "endpoints", "add", "--company", "999", "--url", "https://crm.example.com/h")
    assert (code, err) == (EXIT_USAGE, "zapq: company 999 does not exist (HTTP 422)\n")
    # Refused by the CLI: limits below 1, replay without a choice or with both, --only-failed with --event,
    # a --since that is neither a duration nor a time
    code, _, err = zapq(capsys, *argv, "--url", "https://crm.example.com/h", "--rate", "0")
    assert code == EXIT_USAGE and "must be 1 or more" in err
    endpoint_id, _ = add(capsys, company, "https://crm.example.com/hooks")
    replay = ["endpoints", "replay", str(endpoint_id)]
    code, _, err = zapq(capsys, *replay)
    assert code == EXIT_USAGE and "one of the arguments --event --since is required" in err
    code, _, err = zapq(capsys, *replay, "--event", "evt_0000000000000001", "--since", "2h")
    assert code == EXIT_USAGE and "not allowed with argument" in err
    code, _, err = zapq(capsys, *replay, "--event", "evt_0000000000000001", "--only-failed")
    assert (code, err) == (EXIT_USAGE, "zapq: --only-failed goes with --since\n")
    code, _, err = zapq(capsys, *replay, "--since", "last tuesday")
    assert code == EXIT_USAGE and "bad --since 'last tuesday'" in err
    # And the API's: an event id of the wrong shape
    code, _, err = zapq(capsys, *replay, "--event", "12345")
    assert (code, err) == (EXIT_USAGE, "zapq: event_id: '12345' is not an event id (evt_…) (HTTP 422)\n")


@pytest.mark.parametrize("argv", [["list"], ["add", "--company", "1", "--url", "https://x.example/h"], ["rm", "1"],
                                  ["test", "1"], ["replay", "1", "--since", "2h"]], ids=lambda a: a[0])  # fmt: skip
def test_an_api_that_is_down_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = zapq(capsys, "endpoints", *argv, "--api-url", url)
    assert (code, out) == (EXIT_FAILED, "")
    assert f"cannot reach the zapq API at {url}" in err
