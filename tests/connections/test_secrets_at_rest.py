"""Credentials encrypted at rest: a dump of ``connections`` shows no token, ``zapq secrets rotate`` moves every
credential to the newest key (the old key can then go), and migration 0006 encrypts the rows it finds."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from libs.cli.main import main
from libs.connections.rotation import rotate_credentials
from libs.db.engine import Database
from libs.db.migrate import drop_database, upgrade
from libs.secrets import CannotDecryptError, Secrets, SecretsKeyMissingError, generate_key
from libs.settings import Settings
from tests.connections.conftest import company

META_TOKEN = "EAAG-clear-meta-token-4711"
BRIDGE_KEY = "bridge-clear-api-key-4712"


def make_both(api: TestClient) -> dict[str, Any]:
    """A Meta and a Baileys connection through the API; the Baileys answer (with its one-time secret)."""
    owner = company(api)
    meta = api.post(
        "/api/connections",
        json={"company_id": owner, "provider": "meta", "phone_number_id": "pn-rest", "access_token": META_TOKEN},
    )
    assert meta.status_code == 201, meta.text
    baileys = api.post(
        "/api/connections",
        json={
            "company_id": owner,
            "provider": "baileys",
            "bridge_url": "http://bridge.example:8080",
            "bridge_instance": "rest",
            "bridge_api_key": BRIDGE_KEY,
        },
    )
    assert baileys.status_code == 201, baileys.text
    return dict(baileys.json())


def stored_credentials(db: Database) -> list[tuple[str | None, str | None, str | None]]:
    with db.session() as session:
        rows = session.execute(
            text("SELECT access_token, bridge_api_key, webhook_secret FROM connections ORDER BY id")
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def test_a_dump_of_connections_shows_no_clear_credential(api: TestClient, db: Database, settings: Settings) -> None:
    # Given a token, a bridge key and a webhook secret given to zapq in clear
    baileys = make_both(api)
    clear = (META_TOKEN, BRIDGE_KEY, baileys["webhook_secret"])
    # When the table is dumped, as SELECT * and as pg_dump
    with db.session() as session:
        rows = session.execute(text("SELECT * FROM connections")).all()
    selected = repr(rows)
    url = make_url(settings.sqlalchemy_url)
    dumped = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "--table=connections",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            url.database or "",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    # Then neither shows any of them, and each is a Fernet token the configured key opens
    assert "pn-rest" in dumped and "rest" in selected  # the dump did cover the rows
    for secret in clear:
        assert secret not in dumped and secret not in selected
    secrets = Secrets(settings.secrets_key_list)
    (token, _, _), (_, key, webhook) = stored_credentials(db)
    assert token is not None and key is not None and webhook is not None
    assert (secrets.decrypt(token), secrets.decrypt(key), secrets.decrypt(webhook)) == clear


def test_rotate_moves_every_credential_to_the_newest_key_and_the_old_key_can_go(
    api: TestClient,
    db: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given credentials stored under the session's key
    baileys = make_both(api)
    old = settings.secrets_key_list
    before = stored_credentials(db)
    # When a new key is put first and `zapq secrets rotate` runs
    new = generate_key()
    monkeypatch.setenv("ZAPQ_SECRETS_KEYS", ",".join([new, *old]))
    assert main(["secrets", "rotate"]) == 0
    assert "re-encrypted 3 credentials of 2 connections" in capsys.readouterr().out
    # Then, with the old key removed, every credential still reads as it was
    only_new = Secrets([new])
    after = stored_credentials(db)
    assert after != before
    (token, _, _), (_, key, webhook) = after
    assert token is not None and key is not None and webhook is not None
    assert only_new.decrypt(token) == META_TOKEN
    assert only_new.decrypt(key) == BRIDGE_KEY
    assert only_new.decrypt(webhook) == baileys["webhook_secret"]
    with pytest.raises(CannotDecryptError, match="ZAPQ_SECRETS_KEYS"):
        Secrets(old).decrypt(token)


def test_rotate_without_the_key_a_credential_was_made_with_fails_naming_it_and_changes_nothing(
    api: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_both(api)
    before = stored_credentials(db)
    monkeypatch.setenv("ZAPQ_SECRETS_KEYS", generate_key())  # the key they were made with is missing
    assert main(["secrets", "rotate"]) == 1
    assert "connection 1, access_token" in capsys.readouterr().err
    assert stored_credentials(db) == before


def test_rotate_works_in_batches(api: TestClient, db: Database, settings: Settings) -> None:
    make_both(api)
    newest = generate_key()
    rotated = rotate_credentials(db, Secrets([newest, *settings.secrets_key_list]), batch=1)
    assert (rotated.connections, rotated.values) == (2, 3)
    assert all(Secrets([newest]).decrypt(v) for row in stored_credentials(db) for v in row if v is not None)


def test_a_secrets_object_needs_a_key() -> None:
    with pytest.raises(SecretsKeyMissingError, match="ZAPQ_SECRETS_KEYS"):
        Secrets([])
    assert repr(Secrets([generate_key()])) == "Secrets(1 keys)"  # never the key itself


@pytest.fixture
def scratch_database(settings: Settings) -> Any:
    """An empty database of its own (migrated step by step by the test), dropped after."""
    url = make_url(settings.sqlalchemy_url).set(database=f"zapq_k_{uuid.uuid4().hex[:10]}")
    rendered = url.render_as_string(hide_password=False)
    yield rendered
    drop_database(rendered)


def test_migration_0006_encrypts_existing_rows_and_refuses_without_a_key(scratch_database: str) -> None:
    # Given a database at 0004 holding clear credentials
    upgrade(scratch_database, "0004")
    engine = create_engine(scratch_database)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO companies (name) VALUES ('old')"))
        conn.execute(
            text(
                "INSERT INTO connections (company_id, name, provider, phone_number_id, access_token) "
                "VALUES (1, 'm', 'meta', 'pn-old', :token)"
            ),
            {"token": META_TOKEN},
        )
        conn.execute(
            text(
                "INSERT INTO connections (company_id, name, provider, bridge_url, bridge_instance, bridge_api_key) "
                "VALUES (1, 'b', 'baileys', 'http://bridge:8080', 'old', :key)"
            ),
            {"key": BRIDGE_KEY},
        )

    def credentials() -> list[tuple[str | None, str | None]]:
        with engine.connect() as conn:
            return [
                (r[0], r[1])
                for r in conn.execute(text("SELECT access_token, bridge_api_key FROM connections ORDER BY id"))
            ]

    # When it is upgraded without a key: refused, naming the variable, and nothing changed
    with pytest.raises(RuntimeError, match="ZAPQ_SECRETS_KEYS is not set: 2 connections"):
        upgrade(scratch_database, secrets_keys=[])
    assert credentials() == [(META_TOKEN, None), (None, BRIDGE_KEY)]
    # When it is upgraded with a key: every credential is encrypted under it
    key = generate_key()
    upgrade(scratch_database, secrets_keys=[key])
    (token, none_a), (none_b, bridge) = credentials()
    assert none_a is None and none_b is None and token is not None and bridge is not None
    assert META_TOKEN not in token and BRIDGE_KEY not in bridge
    assert (Secrets([key]).decrypt(token), Secrets([key]).decrypt(bridge)) == (META_TOKEN, BRIDGE_KEY)
    engine.dispose()
