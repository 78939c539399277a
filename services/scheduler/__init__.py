"""Ops service: the dead-letter recorder and the periodic jobs.

Two commands import this module:

* ``dramatiq services.scheduler`` consumes ``dead-letter`` and ``maintenance`` (any number of processes);
* ``periodiq services.scheduler`` is the clock that enqueues the periodic jobs (run exactly one).
"""

from __future__ import annotations

import os
import sys

from periodiq import PeriodiqMiddleware

from libs.broker import setup_broker
from libs.heartbeat import start_heartbeat
from libs.observability import init_sentry, init_tracing, setup_logging
from libs.runtime import install_resources
from libs.settings import load_settings

settings = load_settings()
setup_logging(fmt=settings.log_format)
init_sentry(settings, service="scheduler")
init_tracing(settings, service="scheduler")
broker = setup_broker(settings)
if not any(isinstance(m, PeriodiqMiddleware) for m in broker.middleware):
    broker.add_middleware(PeriodiqMiddleware(skip_delay=30))
resources = install_resources(broker, settings)
if os.path.basename(sys.argv[0]).startswith("periodiq"):
    # The clock process (`periodiq services.scheduler`) has no worker threads: prove it runs for its probe.
    start_heartbeat(settings.stack_heartbeat_dir, "scheduler")

from services.scheduler.actors import (  # noqa: E402
    finish_campaigns,
    prune_dead_letters,
    prune_events,
    prune_media,
    record_dead_letter,
    refresh_meta_fields,
    start_due_campaigns,
    sweep_campaigns,
    sweep_event_deliveries,
    sweep_media,
    sweep_sends,
    sweep_webhooks,
    sync_templates,
    unpark_campaigns,
)

__all__ = [
    "broker",
    "finish_campaigns",
    "prune_dead_letters",
    "prune_events",
    "prune_media",
    "record_dead_letter",
    "refresh_meta_fields",
    "resources",
    "settings",
    "start_due_campaigns",
    "sweep_campaigns",
    "sweep_event_deliveries",
    "sweep_media",
    "sweep_sends",
    "sweep_webhooks",
    "sync_templates",
    "unpark_campaigns",
]
