"""Fixtures for ingestion tests: the edge app wired to this session's Postgres and Redis, and a real worker."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import pytest
from dramatiq.common import dq_name
from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Webhook
from libs.ingest.edge import create_app
from libs.settings import Settings
from libs.whatsapp.signature import sign_meta
from tests.helpers import drain
from tests.ingest import factories as f


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Edge:
    """Posts webhooks to the edge app (signed for Meta, with the shared secret for Baileys)."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def meta(self, payload: dict[str, Any] | bytes) -> httpx.Response:
        """POST ``payload`` to ``/webhooks/meta`` signed with the app secret."""
        body = payload if isinstance(payload, bytes) else f.dumps(payload)
        headers = {
            "content-type": "application/json",
            "x-hub-signature-256": sign_meta(body, self.settings.meta_app_secret),
        }
        return self.client.post("/webhooks/meta", content=body, headers=headers)

    def baileys(self, payload: dict[str, Any] | bytes) -> httpx.Response:
        """POST ``payload`` to ``/webhooks/baileys`` with the shared-secret header."""
        body = payload if isinstance(payload, bytes) else f.dumps(payload)
        headers = {
            "content-type": "application/json",
            self.settings.baileys_secret_header: self.settings.baileys_webhook_secret,
        }
        return self.client.post("/webhooks/baileys", content=body, headers=headers)


@pytest.fixture
def edge(settings: Settings, db: Database, broker: Any) -> Iterator[Edge]:
    """The edge app with its lifespan running (Postgres pool + Redis client)."""
    with TestClient(create_app(settings)) as client:
        yield Edge(client, settings)


#: Queues the ingest tests' worker leaves alone: inbound media files are fetched by tests/media's fixtures.
NOT_CONSUMED = frozenset({contracts.MEDIA, dq_name(contracts.MEDIA)})


@pytest.fixture
def worker(broker: Any) -> Iterator[dramatiq.Worker]:
    """A real worker on every declared queue but :data:`NOT_CONSUMED`, stopped after the test."""
    queues = {q for q in broker.get_declared_queues() if q not in NOT_CONSUMED}
    w = dramatiq.Worker(broker, queues=queues, worker_timeout=50, worker_threads=4)
    w.start()
    yield w
    w.stop()
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not w]


class Ingest:
    """Post through the edge, then drain the real worker: each call returns the processed webhook row."""

    def __init__(self, edge: Edge, db: Database, broker: Any, worker: dramatiq.Worker) -> None:
        self.edge = edge
        self.db = db
        self.broker = broker
        self.worker = worker

    def drain(self) -> None:
        """Wait until every declared queue is empty and the worker idle (the ``media`` jobs that inbound media
        messages enqueue are left waiting: this worker does not consume them, ``tests/media`` does)."""
        drain(self.broker, self.worker, [q for q in self.broker.get_declared_queues() if q not in NOT_CONSUMED])

    def _finish(self, response: httpx.Response) -> Webhook:
        assert response.status_code == 200, response.text
        # The edge enqueues after answering, in the background: wait for that before draining the worker
        self.edge.client.portal.call(self.edge.client.app.state.edge.writer.drain)  # type: ignore[union-attr,attr-defined]
        self.drain()
        return f.webhook(self.db, response.json()["id"])

    def meta(self, payload: dict[str, Any] | bytes) -> Webhook:
        """Deliver a Meta webhook end to end."""
        return self._finish(self.edge.meta(payload))

    def baileys(self, payload: dict[str, Any] | bytes) -> Webhook:
        """Deliver an Evolution API webhook end to end."""
        return self._finish(self.edge.baileys(payload))


@pytest.fixture
def ingest(edge: Edge, db: Database, broker: Any, worker: dramatiq.Worker) -> Ingest:
    """Edge + real worker."""
    return Ingest(edge, db, broker, worker)
