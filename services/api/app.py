"""api ASGI app: ``uvicorn services.api.app:app``."""

from __future__ import annotations

from libs.api.app import create_app
from services.api import settings

app = create_app(settings)
