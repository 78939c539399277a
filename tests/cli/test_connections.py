"""``zapq connection …`` through the real API: a credential given as ``-`` comes from standard input, a Baileys
connection's webhook URL and secret are printed once, and in ``prod`` a bridge URL into zapq's own network is
refused by the API's outbound guard (exit 2, nothing stored)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from libs.cli.output import EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.settings import Settings
from tests.api.conftest import make_company
from tests.cli.conftest import serving, zapq


def test_add_baileys_prints_its_webhook_once_and_stores_the_key_encrypted(
    api_url: str, http: httpx.Client, db: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    company = make_company(http)  # type: ignore[arg-type]  # the helpers only need .post()
    monkeypatch.setattr("sys.stdin", io.StringIO("bridge-key-from-stdin\n"))
    code, out, err = zapq(
        capsys, "connection", "create", "--company", str(company["id"]), "--provider", "baileys",
        "--bridge-url", "http://bridge.example:8080", "--bridge-instance", "cli-main", "--bridge-api-key", "-",
    )  # fmt: skip
    assert code == EXIT_OK, err
    first, webhook, secret, note = out.splitlines()
    assert first.isdigit() and webhook.startswith("webhook /webhooks/baileys/")
    assert secret.startswith("secret whbs_") and "shown this once" in note
    with db.session() as session:
        stored = session.execute(text("SELECT bridge_api_key FROM connections")).scalar_one()
    assert "bridge-key-from-stdin" not in stored
    code, out, _ = zapq(capsys, "connection", "list", "--json")
    assert code == EXIT_OK and [c["bridge_instance"] for c in json.loads(out)] == ["cli-main"]
    assert "bridge-key-from-stdin" not in out and secret.removeprefix("secret ") not in out


def test_a_missing_credential_is_bad_usage(
    api_url: str, http: httpx.Client, db: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    company = make_company(http)  # type: ignore[arg-type]  # the helpers only need .post()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = zapq(
        capsys, "connection", "create", "--company", str(company["id"]), "--provider", "meta",
        "--phone-number-id", "1", "--access-token", "-",
    )  # fmt: skip
    assert code == EXIT_USAGE and "standard input" in err


def test_prod_refuses_a_bridge_at_loopback_or_metadata(
    settings: Settings, db: Database, broker: Any, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    with serving(settings.model_copy(update={"env": "prod"})) as url:
        monkeypatch.setenv("ZAPQ_API_URL", url)
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {settings.api_token}"}) as http:
            company = make_company(http)  # type: ignore[arg-type]
        for bridge in ("https://127.0.0.1:8080", "https://169.254.169.254"):
            monkeypatch.setattr("sys.stdin", io.StringIO("bridge-key\n"))
            code, _, err = zapq(
                capsys, "connection", "create", "--company", str(company["id"]), "--provider", "baileys",
                "--bridge-url", bridge, "--bridge-instance", "cli-prod", "--bridge-api-key", "-",
            )  # fmt: skip
            assert code == EXIT_USAGE, err
            assert "bridge_url refused" in err and "private or reserved" in err
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM connections")).scalar_one() == 0
