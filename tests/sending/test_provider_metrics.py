"""Provider call latency and error codes reach GET /metrics from the sender processes, through Redis."""

from __future__ import annotations

from typing import Any

import dramatiq
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.sending.send import SenderContext
from libs.settings import Settings
from tests.helpers import drain
from tests.sending.conftest import configure, enqueue, make_connection, make_messages, on_loop


def test_latency_and_error_codes_are_exported(
    db: Database, broker: Any, context: SenderContext, fake_meta: str, worker: dramatiq.Worker, settings: Settings
) -> None:
    # Given two accepted sends and one refused with 131026
    company, connection = make_connection(db)
    configure(fake_meta, forced_errors=[131026])
    enqueue(broker, make_messages(db, company, connection, ["16505550101", "16505550102", "16505550103"]))
    drain(broker, worker)
    # When the sender flushes its counts
    on_loop(context.metrics.flush(context.throttle.client, settings.redis_namespace))
    # Then /metrics shows the latency histogram and the error code
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {settings.api_token}"}).text
    assert 'zapq_provider_request_seconds_count{provider="meta"} 3.0' in text
    assert 'zapq_provider_request_seconds_bucket{le="+Inf",provider="meta"} 3.0' in text
    assert 'zapq_provider_errors_total{code="131026",provider="meta"} 1.0' in text
    # And the outcomes per company and connection
    labels = f'company="{company}",connection="{connection}"'
    assert f'zapq_sends_total{{code="",{labels},outcome="sent"}} 2.0' in text
    assert f'zapq_sends_total{{code="131026",{labels},outcome="failed"}} 1.0' in text
    assert "zapq_throttle_waits_total{" not in text


def test_throttle_waits_are_counted_per_connection(
    db: Database, broker: Any, context: SenderContext, fake_meta: str, worker: dramatiq.Worker, settings: Settings
) -> None:
    # Given a send the provider rate-limits twice (130429) before accepting it
    company, connection = make_connection(db)
    configure(fake_meta, forced_errors=[130429, 130429])
    enqueue(broker, make_messages(db, company, connection, ["16505550104"]))
    drain(broker, worker)
    on_loop(context.metrics.flush(context.throttle.client, settings.redis_namespace))
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {settings.api_token}"}).text
    # Then two throttle waits and one send are counted for its connection
    labels = f'company="{company}",connection="{connection}"'
    assert f'zapq_sends_total{{code="130429",{labels},outcome="throttled"}} 2.0' in text
    assert f"zapq_throttle_waits_total{{{labels}}} 2.0" in text
    assert f'zapq_sends_total{{code="",{labels},outcome="sent"}} 1.0' in text


def test_code_labels_are_bounded() -> None:
    from libs.sending.metrics import code_label

    assert [code_label(c) for c in (131026, "network", "local", "http_503", "")] == [
        "131026",
        "network",
        "local",
        "http_503",
        "",
    ]
    assert {code_label(c) for c in ("x" * 50, "12345678901", "http_99999", "DROP")} == {"other"}
