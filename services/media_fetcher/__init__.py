"""media-fetcher: consumes ``media``. Run with ``dramatiq services.media_fetcher``.

Each job downloads one inbound message's file from its provider and keeps it (:mod:`libs.media.fetch`).
Setup order: settings → Sentry → broker → resources → actors.
"""

from __future__ import annotations

from libs.broker import setup_broker
from libs.media.runtime import FetcherResources
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="media-fetcher")
init_tracing(settings, service="media-fetcher")
broker = setup_broker(settings)
fetcher = FetcherResources(settings)
broker.add_middleware(fetcher)

from services.media_fetcher.actors import fetch_media  # noqa: E402

__all__ = ["broker", "fetch_media", "fetcher", "settings"]
