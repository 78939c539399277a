"""Fixtures of the template catalogue tests: a fake Graph API with a WABA's templates, a Meta connection to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.models import Provider, TemplateCatalogue, WhatsAppTemplate
from libs.secrets import Secrets
from libs.settings import Settings
from libs.templates.graph import Graph
from tests.fakes.meta import DEFAULT_TOKEN, MetaFakeConfig, create_app
from tests.fakes.meta_templates import template
from tests.fakes.server import running_app
from tests.sending.conftest import make_company_connection

WABA = "102290129340398"
NUMBER_ID = "106540352242922"

#: A WABA's catalogue as the tests set it at the fake (3 languages / statuses, placeholders in header and body).
CATALOGUE = [
    template("order_update", "Hi {{1}}, order {{2}} has shipped", header="Order {{1}}"),
    template("order_update", "Olá {{1}}, pedido {{2}} enviado", header="Pedido {{1}}", language="pt_BR"),
    template("hello_world", "Hello!"),
    template("spring_sale", "Hi {{1}}, 20% off until {{2}}"),
    template("draft_promo", "Soon {{1}}", status="PENDING"),
    template("bad_promo", "Buy {{1}}", status="REJECTED"),
]


@pytest.fixture(scope="session")
def graph_server() -> Iterator[str]:
    """One fake Graph API for the session (reset before each test)."""
    with running_app(create_app(MetaFakeConfig(waba_id=WABA))) as url:
        yield url


@pytest.fixture
def fake_graph(graph_server: str) -> str:
    """The fake Graph API in its start-up state (no catalogue: set one with :func:`set_catalogue`)."""
    httpx.post(f"{graph_server}/_fake/reset").raise_for_status()
    return graph_server


@pytest.fixture
def graph(fake_graph: str) -> Graph:
    """Where the sync finds the fake Graph API."""
    return Graph(fake_graph, "v21.0")


@pytest.fixture
def secrets(settings: Settings) -> Secrets:
    """This session's credential cipher (the one the test connections are encrypted with)."""
    return Secrets(settings.secrets_key_list)


def set_catalogue(url: str, templates: list[dict[str, Any]], **extra: Any) -> None:
    """Give the fake WABA these templates (``fail_with``: answer the list with that Meta error code)."""
    httpx.post(f"{url}/_fake/templates", json={"templates": templates, **extra}).raise_for_status()


def list_calls(url: str) -> int:
    """How many template-list pages the fake served."""
    return int(httpx.get(f"{url}/_fake/templates").json()["list_calls"])


def meta_connection(
    db: Database, *, waba_id: str | None = WABA, token: str = DEFAULT_TOKEN, **extra: Any
) -> tuple[int, int]:
    """A company and an active Meta connection of ``waba_id``; their ids."""
    return make_company_connection(
        db, provider=Provider.META, phone_number_id=extra.pop("phone_number_id", NUMBER_ID), access_token=token,
        waba_id=waba_id, **extra,
    )  # fmt: skip


def stored(db: Database, connection_id: int) -> dict[tuple[str, str], WhatsAppTemplate]:
    """The connection's catalogue rows by (name, language)."""
    with db.session() as session:
        rows = session.execute(select(WhatsAppTemplate).where(WhatsAppTemplate.connection_id == connection_id))
        found = {(row.name, row.language): row for row in rows.scalars()}
        session.expunge_all()
        return found


def catalogue_row(db: Database, connection_id: int) -> TemplateCatalogue | None:
    """The connection's catalogue marker."""
    with db.session() as session:
        row = session.get(TemplateCatalogue, connection_id)
        if row is not None:
            session.expunge(row)
        return row
