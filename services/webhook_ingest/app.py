"""webhook-ingest ASGI edge: ``uvicorn services.webhook_ingest.app:app``."""

from __future__ import annotations

from libs.ingest.edge import create_app
from services.webhook_ingest import settings

app = create_app(settings)
