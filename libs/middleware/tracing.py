"""Trace context in Dramatiq messages: the W3C ``traceparent`` of the enqueuing span travels in the message options.

The one place a job's trace context is written and read (:mod:`libs.tracing` does the spans):

* :meth:`TraceContext.options` — the options to add to a message being enqueued: ``traceparent`` of the current
  span. Called by :func:`libs.enqueue.prepared` (zapq's bulk and asyncio enqueues, which bypass broker hooks) and
  by :meth:`TraceContext.before_enqueue` (``actor.send``, delayed messages, retries keep theirs);
* :meth:`TraceContext.parent` — a job's ``traceparent``, for an async actor that opens its span on the event loop;
* :meth:`TraceContext.before_process_message` — a sync actor's job runs inside a ``job <actor>`` span continuing
  the trace (ended in ``after_process_message`` / ``after_skip_message``).

A stored webhook keeps its request's context in its own row (the ingest worker reads it there, whichever job applies
it), so webhook jobs carry none. While tracing is off every hook returns at its first line and no option is written.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from dramatiq import Broker, Message, Middleware

from libs import tracing


class TraceContext(Middleware):
    """Carry the enqueuing span's context into the job (see the module docstring)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @staticmethod
    def options() -> dict[str, str]:
        """``{"traceparent": ...}`` of the current span, or ``{}`` (tracing off, or no span)."""
        if not tracing.enabled():
            return {}
        traceparent = tracing.current_traceparent()
        return {tracing.TRACEPARENT: traceparent} if traceparent else {}

    @staticmethod
    def options_for(message: Message[Any]) -> dict[str, str]:
        """:meth:`options`, unless ``message`` already carries a context."""
        if not tracing.enabled() or tracing.TRACEPARENT in message.options:
            return {}
        return TraceContext.options()

    @staticmethod
    def parent(message: Any) -> str | None:
        """The ``traceparent`` a job was enqueued with (None: none, or tracing off)."""
        if not tracing.enabled() or message is None:
            return None
        value = message.options.get(tracing.TRACEPARENT)
        return value if isinstance(value, str) else None

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        """Stamp the current span's context on a message enqueued through the broker (kept if already there)."""
        if tracing.enabled():
            message.options.update(self.options_for(message))

    def before_process_message(self, broker: Broker, message: Any) -> None:
        """Open the job's span for a sync actor (an async one opens its own on the event loop)."""
        parent = self.parent(message)
        if parent is None:
            return
        actor = broker.get_actor(message.actor_name)
        if inspect.iscoroutinefunction(inspect.unwrap(actor.fn)):  # under Dramatiq's sync wrapper of async actors
            return
        span = tracing.span(
            f"job {message.actor_name}", parent=parent, attributes={"messaging.destination": message.queue_name}
        )
        span.__enter__()
        self._local.span = span

    def _close(self, exception: BaseException | None) -> None:
        span = getattr(self._local, "span", None)
        if span is None:
            return
        self._local.span = None
        if exception is not None:
            tracing.fail(type(exception).__name__)
        span.__exit__(None, None, None)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """End the sync job's span."""
        self._close(exception)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        """End the sync job's span of a skipped message."""
        self._close(None)
