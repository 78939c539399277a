"""Recorded spans and their export: OTLP/HTTP with JSON bodies, or any OpenTelemetry SDK ``SpanExporter``.

:mod:`libs.tracing` records a span as a :class:`Span` (a slotted record: ids, times, attributes, events) rather
than an SDK span: the SDK spends ~70 µs of CPU per span (its sampler, locks, bounded attributes, processor
hooks) and its protobuf encoder ~65 µs more, against ~1.3 ms of CPU per send — every message traced cost a
sender +45 % CPU. A span that ends is written out at once, as OTLP JSON text (:func:`span_json`: no dict or list
is made, so the garbage collector has no more to walk, and the span itself dies young), and the text is
appended to a bounded queue; one thread per process (started on first use, and again in a forked child:
:meth:`Recorder.forked`) joins what waits and sends it every :data:`EXPORT_INTERVAL_S`, or as soon as
:data:`MAX_BATCH` spans wait.

* :class:`OtlpJsonExporter` — ``POST`` to an OTLP/HTTP traces endpoint (``/v1/traces``), body in the OTLP JSON
  encoding (``Content-Type: application/json``; accepted by the OpenTelemetry Collector, Jaeger, Tempo,
  Honeycomb). Headers from ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,k2=v2``).
  A failed batch is retried once after a second, then dropped (and counted): tracing never holds up work.
* :class:`SdkExporter` — hands ``ReadableSpan`` objects to an SDK exporter (the suite's in-memory one).
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)
#: A JSON string literal of a str (the C encoder ``json.dumps`` uses).
_string = json.encoder.encode_basestring
#: Attribute keys' JSON prefixes (a few dozen keys).
_KEYS: dict[str, str] = {}

#: Spans waiting for the export thread at most; beyond, new ones are dropped (counted): a few seconds of a busy
#: sender's spans.
EXPORT_QUEUE = 16_384
#: Spans per export request at most; this many waiting wakes the thread before its interval.
MAX_BATCH = 2_048
#: How often the export thread sends what is waiting.
EXPORT_INTERVAL_S = 0.5
#: OTLP span kinds (``SPAN_KIND_INTERNAL``, ``SPAN_KIND_SERVER``).
INTERNAL, SERVER = 1, 2


class Span:
    """One recorded span: W3C ids as lowercase hex (32 and 16 digits, as they are written: in a ``traceparent``
    and in the export, so each id is formatted once), times in ns since the epoch, attributes of
    str/bool/int/float.

    ``error``: the failure's short reason (None: not failed). ``links``: ``(trace_id, span_id, sampled)``."""

    __slots__ = (
        "attributes",
        "end",
        "error",
        "events",
        "kind",
        "links",
        "name",
        "parent_id",
        "span_id",
        "start",
        "trace_id",
    )
    #: A recorded span's trace is sampled (as a :class:`Remote` context's may not be).
    sampled = True

    def __init__(
        self,
        name: str,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        kind: int,
        links: tuple[tuple[str, str, bool], ...],
        attributes: dict[str, Any],
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.links = links
        self.attributes = attributes
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None  # made by the first event
        self.error: str | None = None
        self.start = time.time_ns()
        self.end = 0


class Remote:
    """A span context this process does not record: a job's parent from its ``traceparent``, or a trace sampled
    out (its ``sampled`` False, so nothing below it records either)."""

    __slots__ = ("sampled", "span_id", "trace_id")

    def __init__(self, trace_id: str, span_id: str, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled


class Exporter(Protocol):
    """Where finished spans go: each made ready for export as it ends (:meth:`prepare`, in the traced thread),
    then sent in batches from the export thread."""

    def prepare(self, span: Span) -> Any: ...

    def export(self, items: Sequence[Any]) -> None: ...

    def shutdown(self) -> None: ...


def _value(value: Any) -> str:
    """An attribute value in the OTLP JSON encoding (64-bit ints as strings, as the encoding says)."""
    if isinstance(value, str):
        return '{"stringValue":' + _string(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        return '{"intValue":"' + str(value) + '"}'
    if isinstance(value, float) and math.isfinite(value):
        return '{"doubleValue":' + repr(value) + "}"
    if isinstance(value, (list, tuple)):
        return '{"arrayValue":{"values":[' + ",".join([_value(item) for item in value]) + "]}}"
    return '{"stringValue":' + _string(str(value)) + "}"


def _key(key: str) -> str:
    head = _KEYS[key] = '{"key":' + _string(key) + ',"value":'
    return head


def _attributes(attributes: Mapping[str, Any]) -> str:
    keys = _KEYS
    parts = []
    for key, value in attributes.items():
        head = keys.get(key) or _key(key)
        kind = type(value)  # the two kinds nearly every attribute is, without the isinstance chain
        if kind is str:
            parts.append(f'{head}{{"stringValue":{_string(value)}}}}}')
        elif kind is int:
            parts.append(f'{head}{{"intValue":"{value}"}}}}')
        else:
            parts.append(f"{head}{_value(value)}}}")
    return ",".join(parts)


def span_json(span: Span) -> str:
    """``span`` in the OTLP JSON encoding, written as text (ids as hex, times as decimal strings): no dict or list
    is made for it, so a traced process's garbage collector has nothing more to walk (strings are not tracked)."""
    parent = f'"parentSpanId":"{span.parent_id}",' if span.parent_id is not None else ""
    text = (
        f'{{"traceId":"{span.trace_id}","spanId":"{span.span_id}",{parent}"name":{_string(span.name)},'
        f'"kind":{span.kind},"startTimeUnixNano":"{span.start}","endTimeUnixNano":"{span.end}"'
    )
    if span.attributes:
        text += ',"attributes":[' + _attributes(span.attributes) + "]"
    if span.events:
        events = [
            f'{{"name":{_string(name)},"timeUnixNano":"{at}","attributes":[{_attributes(attributes)}]}}'
            for name, at, attributes in span.events
        ]
        text += ',"events":[' + ",".join(events) + "]"
    if span.links:
        links = [f'{{"traceId":"{t}","spanId":"{s}"}}' for t, s, _ in span.links]
        text += ',"links":[' + ",".join(links) + "]"
    if span.error is not None:
        text += ',"status":{"code":2,"message":' + _string(span.error) + "}"  # STATUS_CODE_ERROR
    return text + "}"


def encode(spans: Sequence[str], service: str) -> bytes:
    """An OTLP/JSON ``ExportTraceServiceRequest`` of spans already written by :func:`span_json`."""
    head = '{"resourceSpans":[{"resource":{"attributes":[' + _attributes({"service.name": service}) + "]},"
    return (head + '"scopeSpans":[{"scope":{"name":"zapq"},"spans":[' + ",".join(spans) + "]}]}]}").encode()


def env_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The export request's extra headers from the standard OpenTelemetry variables (``k=v,k2=v2``, URL-encoded
    values), the traces-specific one winning."""
    headers: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for pair in environ.get(name, "").split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                headers[key.strip().lower()] = urllib.parse.unquote(value.strip())
    return headers


class OtlpJsonExporter:
    """Batches ``POST``-ed to an OTLP/HTTP endpoint as JSON (see the module docstring), over one kept-alive
    ``http.client`` connection: a third of httpx's CPU per request, and the export thread shares its process's
    interpreter lock with the work it traces."""

    #: Seconds an export request may take; and the pause before its one retry.
    TIMEOUT_S = 10.0
    RETRY_AFTER_S = 1.0

    def __init__(self, endpoint: str, service: str, headers: Mapping[str, str] | None = None) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"an OTLP/HTTP endpoint is an http(s) URL, not {endpoint!r}")
        self.endpoint = endpoint
        self.service = service
        self.url = url
        self.path = (url.path or "/v1/traces") + (f"?{url.query}" if url.query else "")
        self.headers = {"content-type": "application/json", **(headers if headers is not None else env_headers())}
        self.dropped = 0
        self._connection: http.client.HTTPConnection | None = None
        self._warned_at = 0.0

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            factory = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self._connection = factory(self.url.hostname or "", self.url.port, timeout=self.TIMEOUT_S)
        return self._connection

    def _post(self, body: bytes) -> int:
        connection = self._connect()
        try:
            connection.request("POST", self.path, body=body, headers=self.headers)
            response = connection.getresponse()
            response.read()
        except BaseException:
            connection.close()  # a half-done exchange: the next request opens a new connection
            self._connection = None
            raise
        if response.will_close:
            connection.close()
            self._connection = None
        return response.status

    def prepare(self, span: Span) -> str:
        """The span in JSON (:func:`span_json`): written as it ends, so only text waits for the export thread."""
        return span_json(span)

    def export(self, spans: Sequence[str]) -> None:
        """Send ``spans`` (one retry on a network error, a 429 or a 5xx; then they are dropped)."""
        body = encode(spans, self.service)
        problem = ""
        for attempt in range(2):
            if attempt:
                time.sleep(self.RETRY_AFTER_S)
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                problem = type(exc).__name__
                continue
            if status < 300:
                return
            problem = f"HTTP {status}"
            if status != 429 and status < 500:
                break  # refused for good: a retry would be refused too
        self.dropped += len(spans)
        if time.monotonic() - self._warned_at > 60:  # at most one line a minute
            self._warned_at = time.monotonic()
            log.warning("trace export to %s failed (%s): %d spans dropped so far", self.endpoint, problem, self.dropped)

    def shutdown(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class SdkExporter:
    """Hand spans to an OpenTelemetry SDK ``SpanExporter`` as ``ReadableSpan`` objects."""

    def __init__(self, exporter: Any, service: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.exporter = exporter
        self.resource = Resource.create({"service.name": service})
        self.scope = InstrumentationScope("zapq")

    def prepare(self, span: Span) -> Span:
        """The span itself (converted at export)."""
        return span

    def export(self, spans: Sequence[Span]) -> None:
        """Convert and export ``spans``."""
        self.exporter.export([self.readable(span) for span in spans])

    def readable(self, span: Span) -> Any:
        """``span`` as an SDK ``ReadableSpan``."""
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        def context(trace_id: str, span_id: str, sampled: bool = True, remote: bool = False) -> SpanContext:
            flags = TraceFlags(1 if sampled else 0)
            return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=remote, trace_flags=flags)

        return ReadableSpan(
            name=span.name,
            context=context(span.trace_id, span.span_id),
            parent=context(span.trace_id, span.parent_id) if span.parent_id is not None else None,
            resource=self.resource,
            attributes=span.attributes,
            events=[Event(name, attributes, at) for name, at, attributes in span.events or ()],
            links=[Link(context(t, s, sampled, remote=True)) for t, s, sampled in span.links],
            kind=SpanKind.SERVER if span.kind == SERVER else SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, span.error) if span.error is not None else Status(StatusCode.UNSET),
            start_time=span.start,
            end_time=span.end,
            instrumentation_scope=self.scope,
        )

    def shutdown(self) -> None:
        """Shut the SDK exporter down."""
        self.exporter.shutdown()


class Recorder:
    """Finished spans → ``exporter``: in batches from one thread (``batch``), or at once in the caller."""

    def __init__(self, exporter: Exporter, *, batch: bool = True) -> None:
        self.exporter = exporter
        self.batch = batch
        self.dropped = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def finish(self, span: Span) -> None:
        """Queue a finished span for export (dropped, and counted, when the queue is full)."""
        item = self.exporter.prepare(span)
        if not self.batch:
            self._export([item])
            return
        if self._thread is None:
            self._start()
        queue = self._queue
        if len(queue) >= EXPORT_QUEUE:
            self.dropped += 1
            return
        queue.append(item)
        if len(queue) == MAX_BATCH:
            self._wake.set()

    def forked(self) -> None:
        """In a child process just forked: the parent's spans and thread are the parent's (call after a fork)."""
        self._queue.clear()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="zapq-trace-export", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(EXPORT_INTERVAL_S)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            self._export([queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))])

    def _export(self, items: Sequence[Any]) -> None:
        try:
            self.exporter.export(items)
        except Exception:  # tracing never fails the work it traces
            log.warning("trace export failed", exc_info=True)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is waiting, stop the thread and the exporter."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        self._drain()
        self.exporter.shutdown()
