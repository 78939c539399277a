"""api: the producer + ops HTTP API and dashboard. Run with ``uvicorn services.api.app:app``.

A producer only: it builds messages through ``libs.contracts`` and declares no actor and no queue.
Setup order: settings → logging → Sentry (the app itself is built in :mod:`services.api.app`).
"""

from __future__ import annotations

from libs.observability import init_sentry, init_tracing, setup_logging
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="api")
init_tracing(settings, service="api")

__all__ = ["settings"]
