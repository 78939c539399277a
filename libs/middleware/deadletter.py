"""Hand a failed job to the dead-letter recorder (queue ``dead-letter``), keeping what replay needs."""

from __future__ import annotations

import logging
import time
import traceback as tb
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.broker import MessageProxy

from libs import contracts
from libs.dramatiq_ext import q_name

logger = logging.getLogger(__name__)

#: Options zapq's middleware keeps on a message; stripped from what replay re-enqueues.
FAILURES = "zq_failures"
DEFERS = "zq_defers"
FIRST_FAILURE = "zq_first_failure"
#: Sentry's Dramatiq integration adds trace headers; a replay must start a new trace, not resume one.
INTERNAL_OPTIONS = frozenset({FAILURES, DEFERS, FIRST_FAILURE, "redis_message_id", "eta", "retries", "_sentry_headers"})

#: What middleware hooks receive (a proxy) or what code builds (a message).
AnyMessage = Message[Any] | MessageProxy

MAX_ERROR_TEXT = 4_000
MAX_TRACEBACK = 16_000


def original_message(message: AnyMessage) -> dict[str, Any]:
    """The job as its producer sent it: replaying this gives it fresh attempts."""
    data = message.asdict()
    data["queue_name"] = q_name(data["queue_name"])
    data["options"] = {k: v for k, v in data["options"].items() if k not in INTERNAL_OPTIONS}
    return data


def qualified_name(exc_type: type[BaseException]) -> str:
    """``module.Class`` of an exception type, as stored in the ledger and used in Sentry fingerprints."""
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


def dead_letter(
    broker: dramatiq.Broker,
    message: AnyMessage,
    *,
    reason: str,
    attempts: int,
    exception: BaseException | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> None:
    """Enqueue a ``RecordDeadLetter`` for ``message``; the caller then acks the original."""
    now = time.time()
    trace = None
    if exception is not None:
        error_type = error_type or qualified_name(type(exception))
        error_message = error_message if error_message is not None else str(exception)
        trace = "".join(tb.format_exception(type(exception), exception, exception.__traceback__))
    payload = contracts.RecordDeadLetter(
        message=original_message(message),
        reason=reason,
        error_type=error_type or "unknown",
        error_message=(error_message or "")[:MAX_ERROR_TEXT],
        traceback=trace[-MAX_TRACEBACK:] if trace else None,
        attempts=attempts,
        first_failed_at=message.options.get(FIRST_FAILURE) or (now if attempts else None),
        last_failed_at=now,
    )
    contracts.RECORD_DEAD_LETTER.send(payload, broker=broker)
    logger.error(
        "dead-lettered message %s of %s on %s: %s (%s) after %d attempt(s)",
        message.message_id,
        message.actor_name,
        payload.message["queue_name"],
        reason,
        payload.error_type,
        attempts,
    )
