"""Worker module for the scaling test: a job that takes 100 ms and records each run in Redis."""

from __future__ import annotations

import time

import dramatiq

from libs.broker import setup_broker
from libs.settings import load_settings

settings = load_settings()
broker = setup_broker(settings)
RUNS = f"{settings.redis_namespace}:scaling:runs"


@dramatiq.actor(queue_name="scaling", actor_name="scaling_job")
def scaling_job(n: int) -> None:
    """Simulated I/O-bound work (the sleep stands for a provider call), then record the run."""
    time.sleep(0.1)
    broker.client.hincrby(RUNS, str(n), 1)
