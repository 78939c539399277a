"""zapq's broker and full middleware stack, set up as a service sets it up, with one no-op actor.

Run with ``dramatiq bench.core_actors -p 2 -t 8`` (the ``core`` scenario does). Setup order as in
``services/<svc>/__init__.py``: settings → logging/Sentry → broker → actors.
"""

from __future__ import annotations

import dramatiq

from bench.jobs import NOOP
from libs.broker import setup_broker
from libs.observability import init_sentry, setup_logging
from libs.settings import load_settings

settings = load_settings()
setup_logging()
init_sentry(settings, service="bench-core")
broker = setup_broker(settings)


@dramatiq.actor(actor_name=NOOP.actor_name, queue_name=NOOP.queue_name)
def noop(n: int) -> None:
    """Do nothing."""
