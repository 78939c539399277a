"""campaign-runner: consumes ``campaigns``. Run with ``dramatiq services.campaign_runner``.

Setup order: settings → Sentry → broker → actors.
"""

from __future__ import annotations

from libs.broker import setup_broker
from libs.campaigns.lanes import Lanes
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.rules.budget import Budget
from libs.runtime import install_resources
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="campaign-runner")
init_tracing(settings, service="campaign-runner")
broker = setup_broker(settings)
resources = install_resources(broker, settings)
lanes = Lanes(settings.redis_namespace, buffer=settings.campaign_feed_buffer)
budget = Budget.from_settings(settings)

from services.campaign_runner.actors import expand_campaign_batch  # noqa: E402

__all__ = ["broker", "budget", "expand_campaign_batch", "lanes", "resources", "settings"]
