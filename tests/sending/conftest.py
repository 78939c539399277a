"""Sender fixtures: a fake Meta Graph API on loopback and the sender pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.db.models import Company, Connection, ConnectionStatus, Direction, Message, MessageStatus, Provider
from libs.settings import Settings
from tests.fakes.meta import DEFAULT_TOKEN, MetaFakeConfig, create_app
from tests.fakes.server import running_app


@pytest.fixture
def fake_meta() -> Iterator[str]:
    """A fake Graph API; configure it with POST /_fake/config."""
    with running_app(create_app(MetaFakeConfig())) as url:
        yield url


@pytest.fixture
def sender(settings: Settings, fake_meta: str, broker: Any) -> Iterator[Any]:
    """The message-sender's resources, pointed at the fake Graph API (rebuilt per test)."""
    import services.message_sender as service

    original = service.sender.settings
    service.sender.settings = settings.model_copy(update={"meta_graph_url": fake_meta})
    service.sender._context = None
    yield service.sender
    service.sender.settings = original
    service.sender._context = None


def configure(url: str, **config: Any) -> None:
    """Change the fake Graph API's behaviour."""
    httpx.post(f"{url}/_fake/config", json=config).raise_for_status()


def sends(url: str) -> list[dict[str, Any]]:
    """Every send the fake accepted."""
    return list(httpx.get(f"{url}/_fake/sends").json())


def make_connection(
    db: Database, *, phone_number_id: str = "106540352242922", rate: int = 80, token: str = DEFAULT_TOKEN
) -> tuple[int, int]:
    """A company and a Meta connection; returns their ids."""
    with db.session() as session:
        company = Company(name="Acme")
        session.add(company)
        session.flush()
        connection = Connection(
            company_id=company.id,
            provider=Provider.META,
            phone_number_id=phone_number_id,
            access_token=token,
            rate_per_second=rate,
            status=ConnectionStatus.ACTIVE,
        )
        session.add(connection)
        session.flush()
        return company.id, connection.id


def make_messages(
    db: Database,
    company_id: int,
    connection_id: int,
    recipients: list[str],
    priority: str = "normal",
    body: str = "hello",
) -> list[int]:
    """Queued outbound messages; returns their ids."""
    with db.session() as session:
        rows = [
            Message(
                company_id=company_id,
                connection_id=connection_id,
                direction=Direction.OUTBOUND,
                priority=priority,
                status=MessageStatus.QUEUED,
                recipient=r,
                body=body,
            )
            for r in recipients
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]
