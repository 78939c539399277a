"""``zapq templates sync|list``: template catalogues from the command line, through the real API, which reads
the fake Graph API; exit codes say what went wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.cli.campaign import render_status
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.settings import Settings
from tests.api.conftest import make_company, make_connection
from tests.cli.conftest import serving, zapq
from tests.fakes.meta import DEFAULT_TOKEN, MetaFakeConfig, create_app
from tests.fakes.meta_templates import template
from tests.fakes.server import running_app

WABA = "102290129340398"
TEMPLATES = [template("hello_world", "Hello!"), template("order_update", "Hi {{1}}", status="PAUSED")]


@pytest.fixture(scope="module")
def graph_url() -> Iterator[str]:
    with running_app(create_app(MetaFakeConfig(waba_id=WABA))) as url:
        yield url


@pytest.fixture(scope="module")
def served_with_graph(settings: Settings, migrated: str, graph_url: str) -> Iterator[str]:
    """The API on a free port, reading the fake Graph API."""
    with serving(settings.model_copy(update={"meta_graph_url": graph_url})) as url:
        yield url


@pytest.fixture
def http(served_with_graph: str, settings: Settings, db: Database, broker: Any, graph_url: str,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:  # fmt: skip
    """A client of that API (``ZAPQ_API_URL`` points the CLI at it); the fake WABA holds :data:`TEMPLATES`."""
    monkeypatch.setenv("ZAPQ_API_URL", served_with_graph)
    httpx.post(f"{graph_url}/_fake/reset").raise_for_status()
    httpx.post(f"{graph_url}/_fake/templates", json={"templates": TEMPLATES}).raise_for_status()
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=served_with_graph, headers=headers, timeout=10) as client:
        yield client


def connection(http: httpx.Client, **extra: Any) -> int:
    company = make_company(http)  # type: ignore[arg-type]  # the helpers only need .post()
    return int(make_connection(http, company["id"], access_token=DEFAULT_TOKEN, **extra)["id"])  # type: ignore[arg-type]


def test_sync_then_list(capsys: pytest.CaptureFixture[str], http: httpx.Client) -> None:
    # Given a Meta connection of the fake WABA
    connection_id = connection(http, waba_id=WABA)
    # When its catalogue is synced
    code, out, _ = zapq(capsys, "templates", "sync", "--connection", str(connection_id))
    # Then it exits 0 saying how many templates it has
    assert code == EXIT_OK and out.startswith(f"connection {connection_id}: 2 templates (0 removed), synced at ")
    # And the list shows them with their status
    code, out, _ = zapq(capsys, "templates", "list", "--connection", str(connection_id), "--json")
    assert code == EXIT_OK
    assert [(t["name"], t["status"]) for t in json.loads(out)] == [
        ("hello_world", "APPROVED"),
        ("order_update", "PAUSED"),
    ]
    code, out, _ = zapq(capsys, "templates", "list", "--status", "PAUSED")
    assert code == EXIT_OK and "order_update" in out and "hello_world" not in out


def test_sync_exit_codes_name_the_problem(
    capsys: pytest.CaptureFixture[str], http: httpx.Client, graph_url: str
) -> None:
    # An unknown connection: 3, not found
    code, _, err = zapq(capsys, "templates", "sync", "--connection", "999999")
    assert code == EXIT_NOT_FOUND and "no connection 999999" in err
    # A connection without a waba_id: 2, refused, saying what to set
    no_waba = connection(http)
    code, _, err = zapq(capsys, "templates", "sync", "--connection", str(no_waba))
    assert code == EXIT_USAGE and f"connection {no_waba} has no waba_id" in err
    # Meta refusing the list (an expired token): 1, failed, with Meta's code
    with_waba = connection(http, waba_id=WABA, phone_number_id="pn-with-waba")
    httpx.post(f"{graph_url}/_fake/templates", json={"templates": TEMPLATES, "fail_with": 190}).raise_for_status()
    code, _, err = zapq(capsys, "templates", "sync", "--connection", str(with_waba))
    assert code == EXIT_FAILED and "meta error 190" in err
    # Bad usage: 2 from argparse
    assert zapq(capsys, "templates", "sync", "--connection", "x")[0] == EXIT_USAGE


def test_campaign_status_shows_why_a_rule_paused_it() -> None:
    campaign = {
        "id": 4, "name": "spring", "status": "paused",
        "status_reason": "template spring_sale (en_US) is PAUSED by Meta",
        "recipients_count": 1, "queued_count": 0, "sent_count": 0, "delivered_count": 0, "read_count": 0,
        "failed_count": 0, "suppressed_count": 0, "progress": 0.0,
    }  # fmt: skip
    head = render_status(campaign).splitlines()[0]
    assert head == "campaign 4 'spring': paused (template spring_sale (en_US) is PAUSED by Meta)"
