"""webhook-ingest worker: consumes ``webhooks``. Run with ``dramatiq services.webhook_ingest``.

Setup order: settings → Sentry → broker → actors. The ASGI edge lives in :mod:`services.webhook_ingest.app`.
"""

from __future__ import annotations

from libs.broker import setup_broker
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.runtime import install_resources
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="webhook-ingest")
init_tracing(settings, service="webhook-ingest")
broker = setup_broker(settings)
resources = install_resources(broker, settings)

from services.webhook_ingest.actors import process_webhook, process_webhooks  # noqa: E402

__all__ = ["broker", "process_webhook", "process_webhooks", "resources", "settings"]
