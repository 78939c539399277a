"""Retry policies, deferral and dead-lettering: replaces Dramatiq's ``Retries`` middleware.

After a failed attempt, by the exception's type (never its text):

* ``Defer`` / ``RateLimited``: enqueue again after ``delay_ms``; no attempt is consumed. Past the
  per-message defer budget the job is dead-lettered with reason ``defer_budget``.
* ``DependencyUnavailableError`` (Postgres down): deferred the same way, after the policy's backoff capped at
  ``dependency_cap_ms`` — an outage longer than the policy's retries must not dead-letter every job it hits.
* ``PermanentError`` or a type in the policy's ``permanent``: dead-lettered at once (``permanent``).
* anything else (``TransientError`` and unknown exceptions): retried after the policy's delay until the
  policy's attempts are spent, then dead-lettered (``exhausted``).

The job that failed is acked either way: its retry copy or dead letter is already enqueued. While Redis is
unreachable or refuses writes (out of memory, read-only) the worker thread waits for it (up to
``broker_wait_s``) to enqueue them; when neither can be enqueued the job is nacked instead (kept in Dramatiq's
``<queue>.XQ``), never acked away.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from typing import Any

import dramatiq
import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.errors import BrokerConnectionError

from libs import contracts
from libs.dramatiq_ext import q_name
from libs.errors import Defer, DependencyUnavailableError, PermanentError
from libs.middleware.deadletter import DEFERS, FAILURES, FIRST_FAILURE, AnyMessage, dead_letter
from libs.middleware.deferlog import DeferralLog
from libs.middleware.policy import DEFAULT_POLICIES, FALLBACK_POLICY, RetryPolicy
from libs.redis_broker import REDIS_UNAVAILABLE

logger = logging.getLogger(__name__)

#: Deferrals one message may take before it is dead-lettered.
DEFAULT_DEFER_BUDGET = 100
#: How long a worker thread waits for Redis to come back to schedule a failed job's retry or dead letter.
DEFAULT_BROKER_WAIT_S = 300.0
#: Longest deferral of a job that failed because a dependency we own (Postgres) was unavailable.
DEFAULT_DEPENDENCY_CAP_MS = 15_000
INITIAL_BROKER_PAUSE_S = 0.1
MAX_BROKER_PAUSE_S = 5.0
#: Option marking a failed message with its fate (``retry``, ``dead`` or ``deferred``) once decided here, for
#: the ``Lifecycle`` middleware (listed before this one, so its ``after_process_message`` runs after this one's).
OUTCOME = "zq_outcome"


class RetryMiddleware(Middleware):
    """Apply the queue's (or actor's ``retry_policy=``) policy to every failed attempt."""

    #: ``throws`` as in Dramatiq: expected exception types are logged at info level, not as errors.
    actor_options = {"retry_policy", "throws"}

    def __init__(
        self,
        *,
        policies: dict[str, RetryPolicy] | None = None,
        defer_budget: int = DEFAULT_DEFER_BUDGET,
        broker_wait_s: float = DEFAULT_BROKER_WAIT_S,
        dependency_cap_ms: int = DEFAULT_DEPENDENCY_CAP_MS,
        rng: random.Random | None = None,
    ) -> None:
        self.policies = dict(DEFAULT_POLICIES if policies is None else policies)
        self.defer_budget = defer_budget
        self.broker_wait_s = broker_wait_s
        self.dependency_cap_ms = dependency_cap_ms
        self.rng = rng or random.Random()
        #: Deferrals at DEBUG, with one INFO summary per minute (count per actor and cause).
        self.deferrals = DeferralLog(logger)

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """The deferrals counted since the last summary are logged before the worker stops."""
        self.deferrals.flush()

    def policy_for(self, broker: Broker, message: AnyMessage) -> RetryPolicy:
        """The actor's own policy, else its queue's, else the fallback."""
        actor = broker.actors.get(message.actor_name)
        own = actor.options.get("retry_policy") if actor is not None else None
        return own or self.policies.get(q_name(message.queue_name), FALLBACK_POLICY)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Decide retry, deferral or dead letter for a failed attempt."""
        if exception is None:
            self.deferrals.flush_due()  # the minute's deferral summary, also when deferrals have stopped
            return
        deadline = time.monotonic() + self.broker_wait_s
        pause, answered = INITIAL_BROKER_PAUSE_S, False
        while True:
            try:
                self._after_failure(broker, message, exception)
                return
            except REDIS_UNAVAILABLE as exc:
                failure = sys.exc_info()
                lost = isinstance(exc, redis.ConnectionError | redis.TimeoutError | BrokerConnectionError)
                if lost and _answers(broker):
                    if answered:  # the connection failed twice, yet Redis answers: not an outage to wait out
                        break
                    answered = True
                    continue
                # Redis is down (a restart) or takes no writes (out of memory, a read-only replica after a
                # failover): wait for it rather than park the job in the dead set, where nothing would run it
                # again. The worker's consumers cannot fetch meanwhile anyway.
                if time.monotonic() + pause > deadline:
                    break
                if pause == INITIAL_BROKER_PAUSE_S:
                    logger.warning("cannot schedule message %s while Redis is down; waiting", message.message_id)
                time.sleep(pause)
                pause = min(pause * 2, MAX_BROKER_PAUSE_S)
            except Exception:
                failure = sys.exc_info()
                break
        # Neither a retry copy nor a dead letter could be enqueued. Dramatiq would ack the job anyway and lose
        # it (upstream #545): nack it instead, into its queue's Dramatiq dead set.
        logger.critical(
            "could not schedule message %s of %s after a failure; nacking it",
            message.message_id,
            message.actor_name,
            exc_info=failure,
        )
        message.fail()

    def _after_failure(self, broker: Broker, message: MessageProxy, exception: BaseException) -> None:
        if isinstance(exception, Defer):
            self._defer(broker, message, exception)
            return

        policy = self.policy_for(broker, message)
        # The recorder itself never dead-letters: it waits for Postgres instead.
        recorder = q_name(message.queue_name) == contracts.DEAD_LETTER
        if isinstance(exception, DependencyUnavailableError) and not recorder:
            # Postgres is down: every job fails alike and would spend its attempts within seconds of the outage.
            # Wait it out as a deferral (no attempt consumed) with the policy's backoff, capped, bounded by the
            # defer budget.
            delay = min(self.dependency_cap_ms, policy.delay_ms(message.options.get(DEFERS, 0) + 1, self.rng))
            self._defer(broker, message, Defer(delay, f"dependency unavailable ({exception})"))
            return

        failures = message.options.get(FAILURES, 0) + 1
        first_failure = message.options.get(FIRST_FAILURE) or time.time()
        permanent = not recorder and isinstance(exception, (PermanentError, *policy.permanent))
        if permanent or (not recorder and policy.exhausted(failures)):
            message.options[FIRST_FAILURE] = first_failure
            dead_letter(
                broker,
                message,
                reason="permanent" if permanent else "exhausted",
                attempts=failures,
                exception=exception,
            )
            message.options[OUTCOME] = "dead"
            return

        delay = policy.delay_ms(failures, self.rng)
        if isinstance(exception, dramatiq.Retry) and exception.delay is not None:
            delay = exception.delay
        broker.enqueue(
            message.copy(options={FAILURES: failures, FIRST_FAILURE: first_failure}),
            delay=delay,
        )
        message.options[OUTCOME] = "retry"
        logger.warning(
            "retrying message %s of %s in %d ms (attempt %d failed: %s)",
            message.message_id,
            message.actor_name,
            delay,
            failures,
            type(exception).__name__,
        )

    def _defer(self, broker: Broker, message: AnyMessage, signal: Defer) -> None:
        defers = message.options.get(DEFERS, 0) + 1
        if defers > self.defer_budget:
            dead_letter(
                broker,
                message,
                reason="defer_budget",
                attempts=message.options.get(FAILURES, 0),
                exception=signal,
                error_message=f"deferred {defers - 1} times (budget {self.defer_budget}): {signal.reason}",
            )
            message.options[OUTCOME] = "dead"
            return
        broker.enqueue(message.copy(options={DEFERS: defers}), delay=signal.delay_ms)
        message.options[OUTCOME] = "deferred"
        self.deferrals.record(message.message_id, message.actor_name, signal.delay_ms, signal.reason)


def _answers(broker: Broker) -> bool:
    """True when the broker's Redis answers a PING."""
    client = getattr(broker, "client", None)
    try:
        return client is None or bool(client.ping())
    except redis.RedisError:
        return False


def is_final_attempt(broker: Broker, message: AnyMessage | None) -> bool:
    """True when a failure of the running attempt of ``message`` would dead-letter it (not retry)."""
    if message is None:
        return False
    for middleware in broker.middleware:
        if isinstance(middleware, RetryMiddleware):
            policy = middleware.policy_for(broker, message)
            return policy.exhausted(message.options.get(FAILURES, 0) + 1)
    return False
