"""OpenTelemetry tracing: one trace per message, from the API call or the webhook POST to the provider and back.

Off by default. :func:`configure` turns it on for a process — from ``ZAPQ_OTEL_ENDPOINT`` (an OTLP/HTTP
collector, e.g. ``http://otel-collector:4318/v1/traces``), or with a given exporter (tests). While it is off,
:func:`span` returns one shared no-op context manager and the helpers return at their first line: no span, no
context object, no string is made — the cost is one global read per call site.

The trace of an outbound message: ``POST /api/messages`` → ``message.enqueue`` → (the job's ``traceparent``,
:mod:`libs.middleware.tracing`) ``message.send`` (with a ``throttle.acquired`` event) → ``provider.send`` (HTTP
status, Meta error code) → later, ``message.status`` spans of the status webhooks, found by the message's wamid
(the send stores its span's context under the hashed wamid in Redis, :class:`WamidLinks`, for ``WAMID_TTL_S``).

A trace sampled out (``ZAPQ_OTEL_SAMPLE_RATIO``) costs its jobs one ``traceparent`` parse: no SDK span is made
below it. Spans are entered without the SDK's generator and decorator (:class:`_Current`), and a step that is a
single call is an event on its job's span (:func:`event`), not a span of its own.
An inbound message: ``POST /webhooks/<source>`` → ``webhook.store`` → (job) ``webhook.apply`` → ``message.received``
/ ``message.status``.

Events: the span that writes an event (``message.received``, ``message.status``) notes it (:func:`note_event`);
the notes of a transaction are written to Redis in one round trip before it commits (:func:`event_links`), keyed
by the event's subject (type, wamid, status) hashed, for ``EVENT_TTL_S``. The event dispatcher reads them for the
deliveries it claims (:func:`traceparents`) and makes each attempt an ``event.deliver`` span under the event's
span — or, for a ``message.status`` written by the sender, under the send's (its wamid link). A delivery of an
event no traced span wrote is not traced.

Attributes carry hashed ids only (:func:`hashed`): never a phone number, a message's text or a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from libs import keys
from libs.batching import Coalescer

#: How long a sent message's trace can be found by its wamid (status webhooks come within days).
WAMID_TTL_S = 7 * 86_400
#: The W3C header and Dramatiq message option that carry a span's context.
TRACEPARENT = "traceparent"
#: Spans waiting for the exporter's thread at most (beyond, new ones are dropped): a few seconds of a busy
#: sender's spans (the SDK's default, 2,048, drops spans in bursts of ~1,000 sends/s).
EXPORT_QUEUE = 16_384
#: How long an event's deliveries can find the span that wrote it (its retries run for about 28 h).
EVENT_TTL_S = 2 * 86_400

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
#: Sync Redis client and namespace where status webhooks look up a wamid's trace (:func:`follow_wamids`).
_wamids: tuple[Any, str] | None = None
_propagator = TraceContextTextMapPropagator()
_NOOP = contextlib.nullcontext()
#: The events noted in this thread's open :func:`event_links` block: (subject digest, traceparent).
_noted = threading.local()


def enabled() -> bool:
    """True while tracing is on in this process."""
    return _tracer is not None


def configure(
    *,
    endpoint: str = "",
    service: str = "zapq",
    exporter: SpanExporter | None = None,
    batch: bool = True,
    sample_ratio: float = 1.0,
) -> bool:
    """Turn tracing on (an OTLP/HTTP ``endpoint`` or an ``exporter``); with neither, leave it off. True if on.

    ``sample_ratio``: the share of new traces recorded (by trace id; a job or status follows its message's
    decision, so a trace is whole or absent)."""
    global _tracer, _provider
    if exporter is None and not endpoint:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter, max_queue_size=EXPORT_QUEUE) if batch else SimpleSpanProcessor(exporter)
    )
    sampler = ParentBased(TraceIdRatioBased(sample_ratio))
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("zapq")
    return True


def shutdown() -> None:
    """Export what is buffered and turn tracing off."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def hashed(value: object) -> str:
    """A stable, non-reversible id for an attribute (16 hex digits of SHA-256): search a trace by it."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


def context_of(traceparent: str | None) -> Context | None:
    """The remote parent named by a W3C ``traceparent`` (None: none, or tracing off)."""
    if _tracer is None or not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent})


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None when tracing is off or no span is current)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def span(
    name: str,
    *,
    parent: str | None = None,
    headers: Mapping[str, str] | None = None,
    link: str | None = None,
    server: bool = False,
    ids: Mapping[str, object] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it (the shared no-op context manager while tracing is off).

    ``parent``: a ``traceparent`` to continue (a job's); ``headers``: an incoming request's (its
    ``traceparent``, if any, is continued); ``link``: a ``traceparent`` linked, not parented (``"current"``:
    the current span, when ``parent`` moves the new span to another trace). ``ids``: ids
    to record hashed (hashed only while tracing is on); other attributes must be counts, codes or names.
    """
    if _tracer is None:
        return _NOOP
    return _start(name, parent, headers, link, server, attributes, ids)


def _start(
    name: str,
    parent: str | None,
    headers: Mapping[str, str] | None,
    link: str | None,
    server: bool,
    attributes: Mapping[str, Any] | None,
    ids: Mapping[str, object] | None,
) -> contextlib.AbstractContextManager[Any]:
    assert _tracer is not None
    context = None
    if parent:
        context = _propagator.extract({TRACEPARENT: parent})
    elif headers is not None and TRACEPARENT in headers:
        context = _propagator.extract({TRACEPARENT: headers[TRACEPARENT]})
    # A trace sampled out stays out (ParentBased): no SDK span, no sampler call, no attribute. The remote
    # parent is made current all the same, so the spans inside see it and return at once too.
    known = trace.get_current_span(context).get_span_context()
    if known.is_valid and not known.trace_flags.sampled:
        return _Current(None, context) if context is not None else _NOOP
    links: tuple[Link, ...] = ()
    if link == "current":
        links = (Link(trace.get_current_span().get_span_context()),)
    elif link and (linked := trace.get_current_span(_propagator.extract({TRACEPARENT: link})).get_span_context()):
        links = (Link(linked),)
    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    current = _tracer.start_span(name, context=context, kind=kind, links=links, record_exception=False)
    if current.is_recording():  # a trace not sampled costs no attribute, no hash
        if attributes:
            current.set_attributes(attributes)
        if ids:
            current.set_attributes({key: hashed(value) for key, value in ids.items() if value is not None})
    return _Current(current)


class _Current:
    """Make a started span (or, for a trace sampled out, only its remote parent ``context``) current for a
    block, and end the span after: what ``start_as_current_span`` does, without its generator, its decorator
    and its exception event (an exception's text may carry message content)."""

    __slots__ = ("context", "span", "token")

    def __init__(self, span: trace.Span | None, context: Context | None = None) -> None:
        self.span = span
        self.context = context
        self.token: object = None

    def __enter__(self) -> trace.Span:
        if self.span is None:
            self.token = otel_context.attach(self.context)  # type: ignore[arg-type]
            return trace.get_current_span()
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]
        span = self.span
        if span is None:
            return
        if kind is not None and span.is_recording():  # failed by an exception, unless :func:`fail` said why
            status = getattr(span, "status", None)
            if status is None or status.status_code is StatusCode.UNSET:
                span.set_status(Status(StatusCode.ERROR, kind.__name__))
        span.end()


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (nothing while tracing is off)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key, value)


def event(name: str, *, ids: Mapping[str, object] | None = None, **attributes: Any) -> None:
    """An event (a point in time, with attributes) on the current span, where a child span would add nothing
    but its start: far cheaper to record and export (nothing while tracing is off or the trace is sampled out).
    ``ids`` are recorded hashed."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if not current.is_recording():
        return
    if ids:
        attributes.update({key: hashed(value) for key, value in ids.items() if value is not None})
    current.add_event(name, {key: value for key, value in attributes.items() if value is not None})


def fail(reason: str) -> None:
    """Mark the current span failed with a short reason (never message content)."""
    if _tracer is None:
        return
    trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))


def status_span(wamid: str, status: str) -> contextlib.AbstractContextManager[Any]:
    """A ``message.status`` span in the trace of the send that got ``wamid`` (found in Redis), linked to the
    current span (the webhook being applied); in the current trace when the send's is not known."""
    if _tracer is None:
        return _NOOP
    return span(
        "message.status",
        parent=traceparent_of_wamid(wamid),
        link="current",
        ids={"zapq.wamid": wamid},
        attributes={"zapq.status": status},
    )


def wamid_key(namespace: str, wamid: str) -> str:
    """Where the trace context of the send that got ``wamid`` is kept (the wamid hashed)."""
    return keys.trace_of_wamid(namespace, hashed(wamid))


class WamidLinks:
    """Keep each sent message's trace context under its wamid, so its status webhooks join the trace.

    Writes of concurrent sends share one pipelined round trip (a :class:`~libs.batching.Coalescer`); a Redis
    error loses the link (the status spans then start their own trace), never the send.
    """

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._writes: Coalescer[tuple[str, str], None] = Coalescer(self._write_many)

    async def remember(self, wamid: str) -> None:
        """Link ``wamid`` to the current span (nothing while tracing is off)."""
        if _tracer is None or not trace.get_current_span().is_recording():
            return
        traceparent = current_traceparent()
        if traceparent:
            with contextlib.suppress(Exception):
                await self._writes((wamid, traceparent))

    async def _write_many(self, items: list[tuple[str, str]]) -> list[None]:
        pipe = self.client.pipeline(transaction=False)
        for wamid, traceparent in items:
            pipe.set(wamid_key(self.namespace, wamid), traceparent, ex=WAMID_TTL_S)
        await pipe.execute()
        return [None] * len(items)


def follow_wamids(client: Any, namespace: str) -> None:
    """Let this process's status spans find their message's trace by wamid in ``client`` (a sync Redis client)."""
    global _wamids
    _wamids = (client, namespace)


def traceparent_of_wamid(wamid: str) -> str | None:
    """The context kept by :func:`remember_wamid`; None when tracing is off, not following wamids, or none kept."""
    if _tracer is None or _wamids is None:
        return None
    client, namespace = _wamids
    try:
        value = client.get(wamid_key(namespace, wamid))
    except Exception:  # tracing never fails the work it traces
        return None
    return value.decode() if isinstance(value, bytes) else value


def event_key(namespace: str, *subject: object) -> str:
    """Where the context of the span that wrote the event ``subject`` (type, wamid[, status]) is kept."""
    return keys.trace_of_event(namespace, hashed("\x1f".join(str(part) for part in subject)))


def note_event(*subject: object) -> None:
    """The current span wrote the event ``subject`` (type, wamid[, status]): its deliveries join this trace.

    Kept in memory until the enclosing :func:`event_links` block ends (nothing outside one, nothing while
    tracing is off or the span is not sampled)."""
    if _tracer is None or _wamids is None:
        return
    pending: list[tuple[str, str]] | None = getattr(_noted, "pending", None)
    if pending is None or not trace.get_current_span().is_recording():
        return
    traceparent = current_traceparent()
    if traceparent:
        pending.append((event_key(_wamids[1], *subject), traceparent))


@contextlib.contextmanager
def _collect_events() -> Iterator[None]:
    assert _wamids is not None
    pending: list[tuple[str, str]] = []
    _noted.pending = pending
    try:
        yield
    finally:
        _noted.pending = None
    if pending:  # the block ended without an error: write before the caller commits the events
        client = _wamids[0]
        with contextlib.suppress(Exception):  # a lost link loses the delivery spans, never the work
            pipe = client.pipeline(transaction=False)
            for key, traceparent in pending:
                pipe.set(key, traceparent, ex=EVENT_TTL_S)
            pipe.execute()


def event_links() -> contextlib.AbstractContextManager[Any]:
    """A block whose :func:`note_event` calls are written to Redis in one round trip when it ends without an
    error — end it before committing the events (the shared no-op while tracing is off or wamids not followed)."""
    if _tracer is None or _wamids is None:
        return _NOOP
    return _collect_events()


async def traceparents(client: Any, keys_: Sequence[str]) -> list[str | None]:
    """The contexts kept under ``keys_`` (one ``MGET``; all None on a Redis error or while tracing is off)."""
    if _tracer is None or not keys_:
        return [None] * len(keys_)
    try:
        values = await client.mget(list(keys_))
    except Exception:  # tracing never fails the work it traces
        return [None] * len(keys_)
    return [value.decode() if isinstance(value, bytes) else value for value in values]
