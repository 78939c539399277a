"""The ops worker (``services.scheduler``) with the recorder retrying every 250 ms instead of 1 s → 30 s.

Test-only: ``python -m dramatiq tests.middleware.ops_fast_retry`` keeps the Postgres-outage test short. The
production policy of the ``dead-letter`` queue is covered by the policy unit tests.
"""

from __future__ import annotations

from libs import contracts
from libs.middleware.policy import RetryPolicy
from libs.middleware.retry import RetryMiddleware
from services.scheduler import broker, record_dead_letter

FAST_RECORDER_POLICY = RetryPolicy(attempts=None, kind="fixed", base_ms=250)

for _middleware in broker.middleware:
    if isinstance(_middleware, RetryMiddleware):
        _middleware.policies[contracts.DEAD_LETTER] = FAST_RECORDER_POLICY

__all__ = ["broker", "record_dead_letter"]
