"""event-dispatcher: consumes ``event-delivery``. Run with ``dramatiq services.event_dispatcher``.

Every process also publishes events (numbers them and creates their deliveries, :mod:`libs.events.publish`);
one at a time holds the publish lock. Setup order: settings → Sentry → broker → resources → actors.
"""

from __future__ import annotations

from libs.broker import setup_broker
from libs.events.kicks import Kicks
from libs.events.publish import Publisher, PublisherMiddleware
from libs.events.runtime import DispatcherResources
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="event-dispatcher")
init_tracing(settings, service="event-dispatcher")
broker = setup_broker(settings)
dispatcher = DispatcherResources(settings, broker)
broker.add_middleware(dispatcher)
kicks = Kicks(settings.redis_namespace)


def _kick(endpoint_ids: set[int]) -> None:
    kicks.kick(broker.client, endpoint_ids)  # every process's pumps (and a new pump job if none runs)
    dispatcher.wake_local(endpoint_ids)  # this process's pumps, at once


publisher = Publisher(settings.libpq_url, _kick, interval=settings.event_publish_interval_ms / 1000)
broker.add_middleware(PublisherMiddleware(publisher))

from services.event_dispatcher.actors import deliver_events, redeliver_event  # noqa: E402

__all__ = ["broker", "deliver_events", "dispatcher", "kicks", "publisher", "redeliver_event", "settings"]
