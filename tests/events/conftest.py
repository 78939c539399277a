"""Event fixtures: the API in process, a real worker running the event dispatcher (and the webhook ingest),
and a fake CRM receiving the deliveries over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.asyncio import get_event_loop_thread
from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.events.dispatch import DispatchSettings
from libs.ingest.process import process_webhook
from tests.api.conftest import api, app_client, make_company, make_connection  # noqa: F401 - fixtures
from tests.fakes.crm import CrmConfig, CrmReceiver
from tests.fakes.server import running_app
from tests.ingest import factories as f

#: A retry schedule for tests: the production shape, much faster (≈ 7 s in all).
FAST_SCHEDULE = (0.2, 0.4, 0.8, 1.0, 1.5, 1.5, 1.5)


@pytest.fixture
def dispatcher_worker(broker: Any) -> Iterator[dramatiq.Worker]:
    """A real worker consuming only the dispatcher's and the ingest's queues (so sends go nowhere)."""
    worker = dramatiq.Worker(
        broker, worker_timeout=50, worker_threads=2, queues={contracts.EVENT_DELIVERY, contracts.WEBHOOKS}
    )
    worker.start()
    yield worker
    worker.stop()
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]


@pytest.fixture
def policy(dispatcher_worker: dramatiq.Worker) -> Iterator[Any]:
    """Set the dispatcher's delivery policy for this test (``policy(schedule=…, …)``); fast by default."""
    import services.event_dispatcher as service

    loop_thread = get_event_loop_thread()
    assert loop_thread is not None
    context = loop_thread.run_coroutine(service.dispatcher.context())
    original = context.settings

    def apply(**changes: Any) -> DispatchSettings:
        context.settings = DispatchSettings(**{"schedule": FAST_SCHEDULE, "timeout_s": 2.0, **changes})
        return context.settings

    apply()
    yield apply
    context.settings = original
    context.disabled.clear()


@pytest.fixture
def crm() -> Iterator[tuple[CrmReceiver, str]]:
    """A fake CRM on loopback: the receiver and its base URL."""
    receiver = CrmReceiver(CrmConfig())
    with running_app(receiver.app) as url:
        yield receiver, url


def make_endpoint(client: TestClient, company_id: int, url: str, **extra: Any) -> dict[str, Any]:
    """A webhook endpoint created through the API (with its secret)."""
    response = client.post("/api/webhook-endpoints", json={"company_id": company_id, "url": url, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def company_with_number(client: Any, number_id: str) -> int:
    """A company with a Meta connection on ``number_id``, made through the API (a TestClient or httpx client)."""
    company = client.post("/api/companies", json={"name": "Acme"}).json()
    connection = {"company_id": company["id"], "provider": "meta", "phone_number_id": number_id, "access_token": "t"}
    assert client.post("/api/connections", json=connection).status_code == 201
    return int(company["id"])


def customer_writes(
    db: Database, number_id: str, sender: str, text: str, n: int = 0, *, wamid: str | None = None, name: str = "Ana"
) -> None:
    """A customer's text to ``number_id``, stored and applied as the ingest worker does (a ``message.received``)."""
    body = f.meta_payload(
        f.meta_change(
            number_id=number_id,
            contacts=[{"profile": {"name": name}, "wa_id": sender}],
            messages=[
                f.meta_message(wamid or f"wamid.{number_id}.{sender}.{n}", "text", {"body": text}, sender=sender)
            ],
        )
    )
    process_webhook(db, f.webhook_row(db, f.dumps(body)))
