"""OpenTelemetry tracing: one trace per message, from the API call or the webhook POST to the provider and back.

Off by default. :func:`configure` turns it on for a process — from ``ZAPQ_OTEL_ENDPOINT`` (an OTLP/HTTP
collector, e.g. ``http://otel-collector:4318/v1/traces``), or with a given exporter (tests). While it is off,
:func:`span` returns one shared no-op context manager and the helpers return at their first line: no span, no
context object, no string is made — the cost is one global read per call site.

The trace of an outbound message: ``POST /api/messages`` → ``message.enqueue`` → (the job's ``traceparent``,
:mod:`libs.middleware.tracing`) ``message.send`` (the throttle's answer time and the provider call's HTTP status,
Meta error code and duration as its attributes: one span per send) → later, ``message.status`` spans of the
status webhooks: the sender's record of the send keeps its span's context in the message row
(``messages.traceparent``), and the statement applying a status reads it from the row it updates
(:func:`late_span`: no lookup of its own).

Spans are recorded by zapq itself (:mod:`libs.otlp`: a slotted record per span, exported in batches from a
thread as OTLP/JSON), not by the OpenTelemetry SDK, whose per-span machinery cost more than the send it traced;
an SDK ``SpanExporter`` can still receive them (the suite's in-memory one). The current span lives in a
``ContextVar`` (per asyncio task, per thread). A trace sampled out (``ZAPQ_OTEL_SAMPLE_RATIO``) costs its jobs one
``traceparent`` parse: nothing is recorded below it. A step that is a single call is an event on its job's
span (:func:`event`), not a span of its own.
An inbound message: ``POST /webhooks/<source>`` (it ends as its row's group commit does; its context is kept in the
webhook's row) → ``webhook.apply`` in whichever job applies the row (the message received as its attributes,
:func:`note`; a second one in the same webhook a ``message.received`` event) → ``message.status`` per status of our
sends (in the send's trace).

Events: the span that writes an event (``webhook.apply``, ``message.status``, the send for its ``sent`` event)
stores its context in the event's own row (``events.traceparent``), in the statement that writes the event: no
round trip of its own, and committed exactly when the event is. The event dispatcher makes each attempt an
``event.deliver`` span under it. A delivery of an event no traced span wrote is not traced.

Attributes carry hashed ids only (:func:`hashed`): never a phone number, a message's text or a token.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import random
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

from libs.otlp import INTERNAL, SERVER, OtlpJsonExporter, Recorder, Remote, SdkExporter, Span

#: The W3C header and Dramatiq message option that carry a span's context.
TRACEPARENT = "traceparent"
#: A W3C ``traceparent``: version, trace id, parent id, flags (a later version may append fields).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: The same for version 00 exactly, matched first (no strip, no optional tail).
_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_LOW_64 = (1 << 64) - 1
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_recorder: Recorder | None = None
#: A new trace is sampled when its trace id's low 64 bits are below this (OpenTelemetry's TraceIdRatioBased).
_sample_below = 1 << 64
#: The current span (recorded) or context (a job's remote parent, a trace sampled out) of this task or thread.
_current: ContextVar[Span | Remote | None] = ContextVar("zapq_trace", default=None)
_NOOP = contextlib.nullcontext()


def enabled() -> bool:
    """True while tracing is on in this process."""
    return _recorder is not None


def configure(
    *,
    endpoint: str = "",
    service: str = "zapq",
    exporter: Any = None,
    batch: bool = True,
    sample_ratio: float = 1.0,
) -> bool:
    """Turn tracing on (an OTLP/HTTP ``endpoint``, or an OpenTelemetry SDK ``SpanExporter``); with neither, leave it
    off. True if on. ``batch=False`` exports each span as it ends (tests).

    ``sample_ratio``: the share of new traces recorded (by trace id; a job or status follows its message's
    decision, so a trace is whole or absent)."""
    global _recorder, _sample_below
    if exporter is None and not endpoint:
        return False
    shutdown()
    chosen = SdkExporter(exporter, service) if exporter is not None else OtlpJsonExporter(endpoint, service)
    _sample_below = round(min(max(sample_ratio, 0.0), 1.0) * (1 << 64))
    _recorder = Recorder(chosen, batch=batch)
    return True


def shutdown() -> None:
    """Export what is buffered and turn tracing off."""
    global _recorder
    recorder, _recorder = _recorder, None
    if recorder is not None:
        recorder.shutdown()


def _forked() -> None:
    if _recorder is not None:
        _recorder.forked()


atexit.register(shutdown)  # a process's last spans are exported as it exits
os.register_at_fork(after_in_child=_forked)


def hashed(value: object) -> str:
    """A stable, non-reversible id for an attribute (16 hex digits of SHA-256): search a trace by it."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4_096)
def hashed_key(value: int) -> str:
    """:func:`hashed` of an id from a small set (a connection's, a company's): computed once per process."""
    return hashed(value)


def parse(traceparent: str | None) -> Remote | None:
    """The remote context named by a W3C ``traceparent`` (None: none, malformed, or all-zero ids)."""
    if not traceparent:
        return None
    if (found := _VERSION_00.fullmatch(traceparent)) is not None:  # what zapq and nearly every tracer write
        trace_id, span_id, flags = found.groups()
    else:
        found = _TRACEPARENT.fullmatch(traceparent.strip())
        if found is None or found[1] == "ff" or (found[1] == "00" and found[5]):
            return None
        trace_id, span_id, flags = found[2], found[3], found[4]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return Remote(trace_id, span_id, bool(int(flags, 16) & 1))


def _format(context: Span | Remote) -> str:
    return f"00-{context.trace_id}-{context.span_id}-{'01' if context.sampled else '00'}"


def recorded_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span if this process records it (None: tracing off, no span, or
    its trace sampled out) — what an event row keeps, so its deliveries join the span's trace."""
    if _recorder is None or (current := _recording()) is None:
        return None
    return _format(current)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None when tracing is off or no span is current)."""
    if _recorder is None:
        return None
    current = _current.get()
    return _format(current) if current is not None else None


def span(
    name: str,
    *,
    parent: str | None = None,
    headers: Mapping[str, str] | None = None,
    link: str | None = None,
    server: bool = False,
    ids: Mapping[str, object] | None = None,
    attributes: Mapping[str, Any] | None = None,
    root: bool = True,
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it (the shared no-op context manager while tracing is off).

    ``parent``: a ``traceparent`` to continue (a job's); ``headers``: an incoming request's (its
    ``traceparent``, if any, is continued); ``link``: a ``traceparent`` linked, not parented (``"current"``:
    the current span, when ``parent`` moves the new span to another trace). ``ids``: ids
    to record hashed (hashed only while tracing is on); other attributes must be counts, codes or names.
    ``root=False``: a step that is only ever part of a trace begun upstream — with neither a ``parent`` nor a
    current span (none was sent: its trace was sampled out) it is the no-op, never a new trace.
    """
    if _recorder is None or (not root and not parent and _current.get() is None):
        return _NOOP
    return _start(name, parent, headers, link, server, attributes, ids)


def detached() -> contextlib.AbstractContextManager[Any]:
    """A block with no current span — for work started inside one request's span that serves many (a task
    created in it copies the context, and would stamp that request's trace on everything it enqueues)."""
    if _recorder is None:
        return _NOOP
    return _Block(None)


def _new_ids() -> tuple[str, str, int]:
    """A random trace id and span id in hex (one draw for both), and the trace id's low 64 bits (what sampling
    decides by)."""
    while True:
        value = random.getrandbits(192)
        trace, span_id = value >> 64, value & _LOW_64
        if trace and span_id:
            text = f"{value:048x}"
            return text[:32], text[32:], trace & _LOW_64


def _new_span_id() -> str:
    while not (value := random.getrandbits(64)):
        pass
    return f"{value:016x}"


def _start(
    name: str,
    parent: str | None,
    headers: Mapping[str, str] | None,
    link: str | None,
    server: bool,
    attributes: Mapping[str, Any] | None,
    ids: Mapping[str, object] | None,
) -> contextlib.AbstractContextManager[Any]:
    remote: Remote | None = None
    if parent:
        remote = parse(parent)
    elif headers is not None and (incoming := headers.get(TRACEPARENT)):
        remote = parse(incoming)
    current = _current.get()
    # A given parent (even a malformed one: then a new trace) replaces the current span as the parent.
    above = remote if parent or remote is not None else current
    if above is not None and not above.sampled:
        # A trace sampled out stays out: no span, no attribute, no hash. The remote parent is made current all
        # the same, so the spans inside see it and return at once too, and the jobs they enqueue carry it.
        return _Block(remote) if remote is not None else _NOOP
    parent_id: str | None
    if above is None:  # a new trace: sampled by its id, as OpenTelemetry's TraceIdRatioBased does
        trace_id, span_id, low_bits = _new_ids()
        if low_bits >= _sample_below:
            return _Block(Remote(trace_id, span_id, False))
        parent_id = None
    else:
        trace_id, span_id, parent_id = above.trace_id, _new_span_id(), above.span_id
    links: tuple[tuple[str, str, bool], ...] = ()
    if link == "current":
        if current is not None:
            links = ((current.trace_id, current.span_id, current.sampled),)
    elif link and (linked := parse(link)) is not None:
        links = ((linked.trace_id, linked.span_id, linked.sampled),)
    values = dict(attributes) if attributes else {}
    if ids:
        for key, value in ids.items():
            if value is not None:
                values[key] = hashed(value)
    return _Span(name, trace_id, span_id, parent_id, SERVER if server else INTERNAL, links, values)


class _Span(Span):
    """A recorded span that is its own block: current inside it, ended and handed to the recorder after (one
    object per span, not a span and a block). An exception fails it with its type's name only (its text may
    carry message content)."""

    __slots__ = ("token",)

    def __enter__(self) -> Span:
        self.token = _current.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        _current.reset(self.token)
        if kind is not None and self.error is None:  # failed by an exception, unless :func:`fail` said why
            self.error = kind.__name__
        self.end = time.time_ns()
        recorder = _recorder
        if recorder is not None:
            recorder.finish(self)


class _Block:
    """Make a context this process does not record (a trace sampled out, or none: :func:`detached`) current for a
    block."""

    __slots__ = ("context", "token")

    def __init__(self, context: Remote | None) -> None:
        self.context = context
        self.token: Token[Span | Remote | None] | None = None

    def __enter__(self) -> Remote | None:
        self.token = _current.set(self.context)
        return self.context

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.token is not None:
            _current.reset(self.token)


def _recording() -> Span | None:
    """The current span if this process records it (tracing on, trace sampled)."""
    current = _current.get()
    return current if isinstance(current, Span) else None


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (nothing while tracing is off)."""
    if _recorder is None or (current := _recording()) is None:
        return
    kept = current.attributes
    for key, value in attributes.items():
        if value is not None:
            kept[key] = value


def event(name: str, *, ids: Mapping[str, object] | None = None, **attributes: Any) -> None:
    """An event (a point in time, with attributes) on the current span, where a child span would add nothing
    but its start: far cheaper to record and export (nothing while tracing is off or the trace is sampled out).
    ``ids`` are recorded hashed."""
    if _recorder is None or (current := _recording()) is None:
        return
    _add_event(current, name, _details(ids, attributes))


def note(name: str, *, ids: Mapping[str, object] | None = None, **attributes: Any) -> None:
    """Details of one ``name`` on the current span: its attributes — unless the span holds any of them already (a
    second ``name`` in the same span), then an :func:`event` ``name``. For what nearly always happens once per span
    (a webhook carries one message): attributes are cheaper to record and export than an event, and a second one
    loses nothing."""
    if _recorder is None or (current := _recording()) is None:
        return
    values = _details(ids, attributes)
    if current.attributes.keys().isdisjoint(values):
        current.attributes.update(values)
    else:
        _add_event(current, name, values)


def _details(ids: Mapping[str, object] | None, attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` (a call's own keyword dict) with ``ids`` hashed; the None values left out."""
    if ids:
        for key, value in ids.items():
            if value is not None:
                attributes[key] = hashed(value)
    if None in attributes.values():
        return {key: value for key, value in attributes.items() if value is not None}
    return attributes


def _add_event(current: Span, name: str, values: dict[str, Any]) -> None:
    if current.events is None:
        current.events = []
    current.events.append((name, time.time_ns(), values))


def fail(reason: str) -> None:
    """Mark the current span failed with a short reason (never message content)."""
    if _recorder is None or (current := _recording()) is None:
        return
    current.error = reason


class Late:
    """A span whose parent is learnt only once its work is done (:func:`late_span`, :func:`end_late`)."""

    __slots__ = ("attributes", "link", "name", "parent_id", "span_id", "start", "trace_id")

    def __init__(
        self,
        name: str,
        span_id: str,
        current: Span | Remote | None,
        attributes: dict[str, Any],
    ) -> None:
        self.name = name
        self.span_id = span_id
        recorded = current if isinstance(current, Span) else None
        #: The trace and parent it has when no parent is learnt: the current span, if recorded.
        self.trace_id = recorded.trace_id if recorded is not None else None
        self.parent_id = recorded.span_id if recorded is not None else None
        self.link: tuple[tuple[str, str, bool], ...] = (
            ((current.trace_id, current.span_id, current.sampled),) if current is not None else ()
        )
        self.attributes = attributes
        self.start = time.time_ns()


def late_span(name: str, *, ids: Mapping[str, object], attributes: dict[str, Any]) -> Late | None:
    """Begin a span whose parent is read by the work it times — a ``message.status`` span, in the trace of the send
    that got the message its provider id, which the statement applying the status reads from the message row.
    Its id is drawn now, so that statement can write it into the status event it writes (the event's deliveries
    are its children). None while tracing is off. End it with :func:`end_late`."""
    if _recorder is None:
        return None
    return Late(name, _new_span_id(), _current.get(), _details(ids, attributes))


def end_late(late: Late | None, parent: str | None) -> None:
    """Record ``late`` as a child of ``parent`` (a ``traceparent``), linked to the span current when it began (the
    webhook being applied); with no traced parent, as a child of that span; with neither, not at all."""
    if late is None or (recorder := _recorder) is None:
        return
    remote = parse(parent)
    parent_id: str | None
    if remote is not None and remote.sampled:
        trace_id, parent_id, links = remote.trace_id, remote.span_id, late.link
    elif late.trace_id is not None:
        trace_id, parent_id, links = late.trace_id, late.parent_id, ()
    else:
        return
    span = Span(late.name, trace_id, late.span_id, parent_id, INTERNAL, links, late.attributes)
    span.start = late.start
    span.end = time.time_ns()
    recorder.finish(span)
