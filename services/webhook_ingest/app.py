"""webhook-ingest ASGI edge: ``uvicorn services.webhook_ingest.app:app``."""

from __future__ import annotations

from libs.ingest.edge import create_app
from libs.runtime import tune_gc
from services.webhook_ingest import settings

app = create_app(settings)
tune_gc()  # after every import: the start-up heap is frozen out of collection
