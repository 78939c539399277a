"""Span export over OTLP/HTTP (JSON) to a collector on loopback: the wire format, batching, failures, forks."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from libs import otlp, tracing

PHONE = "5511987654321"


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: keeps each request's headers and JSON body, answers with the
    statuses queued in ``answers`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with collector.lock:
                    status = collector.answers.pop(0) if collector.answers else 200
                    if status == 200:
                        headers = {key.lower(): value for key, value in self.headers.items()}
                        collector.requests.append((headers, json.loads(body)))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[dict[str, Any]]:
        with self.lock:
            bodies = [body for _, body in self.requests]
        return [
            span
            for body in bodies
            for resource in body["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    tracing.shutdown()
    running.close()


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in item.get("attributes", [])}


def test_spans_reach_the_collector_as_otlp_json_with_their_chain(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=k%3D1,x-other=2")
    tracing.configure(endpoint=collector.url, service="zapq-test")
    incoming = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    # Given a job's span continuing a remote parent, a child with an event, a failure and a link
    with tracing.span("message.send", parent=incoming, ids={"zapq.message": 42}, link=incoming):
        tracing.event("throttle.acquired", ids={"zapq.connection": 7}, waited_ms=0)
        with tracing.span("provider.send", attributes={"zapq.provider": "meta"}):
            tracing.annotate(**{"http.response.status_code": 400, "zapq.retry": False, "zapq.share": 0.5})
            tracing.fail("ProviderError")
    tracing.shutdown()  # exports what is waiting
    # Then one request carried both, in a body the OTLP schema parses (field names, enums, int64 as strings)
    [(headers, body)] = collector.requests
    assert headers["content-type"] == "application/json"
    assert headers["x-honeycomb-team"] == "k=1" and headers["x-other"] == "2"
    json_format.ParseDict(body, ExportTraceServiceRequest())  # unknown or mistyped fields would raise
    assert attributes(body["resourceSpans"][0]["resource"]) == {"service.name": "zapq-test"}
    send, provider = sorted(collector.spans(), key=lambda span: span["name"] != "message.send")
    assert send["traceId"] == "ab" * 16 and send["parentSpanId"] == "cd" * 8 and send["kind"] == otlp.INTERNAL
    assert provider["traceId"] == send["traceId"] and provider["parentSpanId"] == send["spanId"]
    assert send["links"] == [{"traceId": "ab" * 16, "spanId": "cd" * 8}]
    assert int(send["startTimeUnixNano"]) <= int(provider["startTimeUnixNano"]) <= int(provider["endTimeUnixNano"])
    assert attributes(send) == {"zapq.message": tracing.hashed(42)}
    [acquired] = send["events"]
    assert acquired["name"] == "throttle.acquired"
    assert attributes(acquired) == {"zapq.connection": tracing.hashed(7), "waited_ms": "0"}
    assert attributes(provider) == {
        "zapq.provider": "meta",
        "http.response.status_code": "400",
        "zapq.retry": False,
        "zapq.share": 0.5,
    }
    assert provider["status"] == {"code": 2, "message": "ProviderError"}
    assert "status" not in send


def test_a_refused_export_is_retried_once_and_a_dead_collector_costs_the_spans_only(collector: Collector) -> None:
    exporter = otlp.OtlpJsonExporter(collector.url, "zapq-test", headers={})
    exporter.RETRY_AFTER_S = 0.01
    first = otlp.span_json(otlp.Span("one", f"{1:032x}", f"{2:016x}", None, otlp.INTERNAL, (), {}))
    # A 503 is retried, and the retry lands
    collector.answers[:] = [503]
    exporter.export([first])
    assert [span["name"] for span in collector.spans()] == ["one"] and exporter.dropped == 0
    # A 400 is not retried (it would be refused again): the batch is dropped and counted
    collector.answers[:] = [400, 200]
    exporter.export([first, first])
    assert len(collector.spans()) == 1 and exporter.dropped == 2
    assert collector.answers == [200]
    # Nothing listening: dropped and counted, no exception reaches the traced work
    collector.close()
    exporter.export([first])
    assert exporter.dropped == 3
    exporter.shutdown()


def test_spans_beyond_the_queue_are_dropped_not_buffered_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    class Held:
        def __init__(self) -> None:
            self.exported: list[otlp.Span] = []

        def prepare(self, span: otlp.Span) -> otlp.Span:
            return span

        def export(self, spans: Any) -> None:
            self.exported.extend(spans)

        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(otlp, "EXPORT_QUEUE", 3)
    held = Held()
    recorder = otlp.Recorder(held)
    recorder._thread = threading.Thread()  # pretend the export thread runs but never drains
    for n in range(5):
        recorder.finish(otlp.Span(f"s{n}", f"{1:032x}", f"{n + 1:016x}", None, otlp.INTERNAL, (), {}))
    assert recorder.dropped == 2 and len(recorder._queue) == 3
    recorder._thread = None
    recorder.shutdown()
    assert [span.name for span in held.exported] == ["s0", "s1", "s2"]


def test_a_new_trace_sampled_out_records_nothing_but_carries_its_decision(collector: Collector) -> None:
    tracing.configure(endpoint=collector.url, sample_ratio=0.0)
    with tracing.span("POST /api/messages", server=True):
        carried = tracing.current_traceparent()
        with tracing.span("message.enqueue", ids={"zapq.message": 1}):
            assert tracing.current_traceparent() == carried
    assert carried is not None and carried.endswith("-00")  # the job it enqueues stays sampled out
    tracing.configure(endpoint=collector.url, sample_ratio=1.0)
    with tracing.span("message.send", parent=carried):
        assert tracing.current_traceparent() == carried
    tracing.shutdown()
    assert collector.requests == []


@pytest.mark.parametrize(
    ("value", "sampled"),
    [
        ("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", True),
        ("00-" + "ab" * 16 + "-" + "cd" * 8 + "-00", False),
        ("00-" + "ab" * 16 + "-" + "cd" * 8 + "-03", True),  # the sampled bit among others
        ("00-" + "ab" * 16 + "-" + "cd" * 8 + "-02", False),
        (" 00-" + "ab" * 16 + "-" + "cd" * 8 + "-01 ", True),  # surrounding blanks
        ("cc-" + "ab" * 16 + "-" + "cd" * 8 + "-01-later-fields", True),  # a later version may append fields
    ],
)
def test_a_valid_traceparent_names_its_parent(value: str, sampled: bool) -> None:
    remote = tracing.parse(value)
    assert remote is not None
    assert (remote.trace_id, remote.span_id, remote.sampled) == ("ab" * 16, "cd" * 8, sampled)


@pytest.mark.parametrize(
    "value",
    [
        "00-" + "0" * 32 + "-" + "cd" * 8 + "-01",  # all-zero trace id
        "00-" + "ab" * 16 + "-" + "0" * 16 + "-01",  # all-zero parent id
        "ff-" + "ab" * 16 + "-" + "cd" * 8 + "-01",  # version ff is invalid
        "00-" + "AB" * 16 + "-" + "cd" * 8 + "-01",  # upper case
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01-extra",  # version 00 has no more fields
        "not a traceparent",
        PHONE,
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(collector: Collector, value: str) -> None:
    assert tracing.parse(value) is None
    tracing.configure(endpoint=collector.url)
    with tracing.span("webhook.apply", headers={"traceparent": value}, server=True):
        pass
    tracing.shutdown()
    [span] = collector.spans()
    assert "parentSpanId" not in span and span["traceId"] != "ab" * 16


def _child(url: str) -> None:
    with tracing.span("child"):
        pass
    tracing.shutdown()


def test_a_forked_worker_exports_its_own_spans_once(collector: Collector) -> None:
    # Given a process with tracing on and a span waiting for its export thread (as Dramatiq's parent may have)
    tracing.configure(endpoint=collector.url)
    with tracing.span("parent"):
        pass
    # When it forks a worker that records its own span and exits
    worker = multiprocessing.get_context("fork").Process(target=_child, args=(collector.url,))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    tracing.shutdown()
    # Then each span reached the collector once: the child neither lost its own nor re-sent the parent's
    assert sorted(span["name"] for span in collector.spans()) == ["child", "parent"]
