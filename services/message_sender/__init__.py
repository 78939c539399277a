"""message-sender: consumes ``messages.urgent``, ``messages`` and ``messages.low``.

Run with ``dramatiq services.message_sender``. Setup order: settings → Sentry → broker → actors.
"""

from __future__ import annotations

from libs.broker import setup_broker
from libs.campaigns.lanes import LaneFeeder, Lanes
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.sending.runtime import SenderResources
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="message-sender")
init_tracing(settings, service="message-sender")
broker = setup_broker(settings)
sender = SenderResources(settings)
broker.add_middleware(sender)
broker.add_middleware(LaneFeeder(Lanes(settings.redis_namespace, buffer=settings.campaign_feed_buffer)))

from services.message_sender.actors import send_message, send_message_low, send_message_urgent  # noqa: E402

__all__ = ["broker", "send_message", "send_message_low", "send_message_urgent", "sender", "settings"]
