"""``zapq limits``: each Meta number's messaging-limit budget, and ``--refresh`` from the fake Graph API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from libs.cli.output import EXIT_FAILED, EXIT_OK
from libs.db.engine import Database
from libs.rules.budget import Budget, digest
from libs.settings import Settings
from tests.cli.conftest import zapq
from tests.fakes.meta import MetaFakeConfig, create_app
from tests.fakes.server import running_app
from tests.sending.conftest import make_baileys_connection, make_connection


@pytest.fixture
def fake_graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fake Graph API the CLI's settings point at."""
    with running_app(create_app(MetaFakeConfig(messaging_limit_tier="TIER_10K", quality_rating="YELLOW"))) as url:
        monkeypatch.setenv("ZAPQ_META_GRAPH_URL", url)
        yield url


def test_limits_lists_each_meta_number_and_refresh_reads_meta(
    capsys: pytest.CaptureFixture[str], db: Database, broker: Any, settings: Settings, fake_graph: str
) -> None:
    # Given a Meta number that reached 3 people today, and a Baileys one (no such limit)
    _, connection = make_connection(db)
    make_baileys_connection(db, "http://bridge.invalid")
    budget = Budget(settings.redis_namespace)
    broker.client.zadd(
        budget.names.reached(f"c-{connection}"),
        {digest(f"+1555000000{i}"): budget.now_ms(broker.client) for i in range(3)},
    )
    # When the budgets are listed
    code, out, _ = zapq(capsys, "limits", "--json")
    # Then only the Meta number shows, its limit unknown (counted, never held)
    assert code == EXIT_OK
    [row] = json.loads(out)
    assert (row["connection"], row["limit"], row["source"], row["reached_24h"], row["waiting"]) == (
        connection,
        "unlimited",
        "unknown",
        3,
        0,
    )
    # When Meta's fields are read first
    code, out, _ = zapq(capsys, "limits", "--refresh", "--connection", str(connection))
    # Then the table shows Meta's tier and rating
    assert code == EXIT_OK
    assert "TIER_10K" in out and "YELLOW" in out and "10000" in out and "meta" in out


def test_a_refresh_that_meta_refuses_exits_1_naming_the_connection(
    capsys: pytest.CaptureFixture[str], db: Database, broker: Any, fake_graph: str
) -> None:
    _, connection = make_connection(db, token="not-a-valid-token")
    code, out, err = zapq(capsys, "limits", "--refresh")
    assert code == EXIT_FAILED
    assert f"connection {connection}: Meta's fields not read" in err and "not-a-valid-token" not in out + err
