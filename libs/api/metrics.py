"""``GET /metrics``: queue depth, dead letters, job counters and live workers in Prometheus text format.

Read fresh on every scrape (one stats read of every queue, two grouped ledger queries, one grouped count of the
messages failed by a WhatsApp rule in the last 24 h, one ``TIME`` and one ``ZCOUNT``: heartbeats are on Redis's
clock; the provider, queue-wait and inbound hashes) — nothing is kept in this process, so any API replica answers
the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from libs.api.http import context
from libs.deadletters import store as dead_letters
from libs.ingest import metrics as inbound_metrics
from libs.keys import BrokerKeys
from libs.messages import store as messages
from libs.middleware import queuewait
from libs.ops.stats import queue_stats_async
from libs.rules.reasons import REASONS
from libs.sending import metrics as provider_metrics


class _Snapshot:
    """A collector returning metric families computed just before."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def metrics(request: Request) -> Response:
    """Prometheus exposition of zapq's queues."""
    ctx = context(request)
    stats = await queue_stats_async(ctx.redis, ctx.namespace, ctx.pool)
    async with ctx.pool.connection() as conn:
        dead_rows = await dead_letters.count_by_kind(conn)
        rule_rows = await messages.rule_failures(conn)
    seconds, micros = await ctx.redis.time()  # heartbeats are on Redis's clock, not this host's
    now_ms = seconds * 1000 + micros // 1000
    workers = await ctx.redis.zcount(
        BrokerKeys(ctx.namespace).heartbeats, now_ms - ctx.settings.heartbeat_timeout_ms, "+inf"
    )

    def gauge(name: str, doc: str, attribute: str) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["queue"])
        for item in stats:
            value = getattr(item, attribute)
            if value is not None:
                family.add_metric([item.queue], float(value))
        return family

    def counter(name: str, doc: str, attribute: str) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["queue"])
        for item in stats:
            family.add_metric([item.queue], float(getattr(item, attribute)))
        return family

    dead = CounterMetricFamily(
        "zapq_dead_letters", "Dead letters in the ledger (kept 90 days)", labels=["queue", "actor", "error_type"]
    )
    for row in dead_rows:
        dead.add_metric([row["queue_name"], row["actor_name"], row["error_type"]], float(row["n"]))
    alive = GaugeMetricFamily("zapq_workers_alive", "Worker processes with a heartbeat within the timeout")
    alive.add_metric([], float(workers))
    kept = GaugeMetricFamily(
        "zapq_webhooks_unmatched", "Webhooks kept for numbers without a connection (applied when one is created)"
    )
    kept.add_metric([], float(sum(s.unmatched or 0 for s in stats)))
    rules = GaugeMetricFamily(
        "zapq_rule_failures",
        "Messages failed by a WhatsApp rule in the last 24 h, by reason (not faults: no dead letter, no alert)",
        labels=["reason"],
    )
    for reason in sorted({*REASONS, *rule_rows}):
        rules.add_metric([reason], float(rule_rows.get(reason, 0)))
    families: list[Metric] = [
        gauge("zapq_queue_waiting", "Jobs waiting in the queue", "waiting"),
        gauge("zapq_queue_delayed", "Jobs delayed (retries with backoff, deferrals, eta)", "delayed"),
        gauge("zapq_queue_inflight", "Jobs fetched by workers and not yet acknowledged", "in_flight"),
        gauge("zapq_queue_dead", "Dead letters not replayed", "dead"),
        gauge("zapq_queue_oldest_waiting_seconds", "Age of the oldest waiting job", "oldest_waiting_seconds"),
        gauge("zapq_queue_duration_p95_milliseconds", "p95 duration of the last 1,000 completed jobs", "p95_ms"),
        counter("zapq_jobs_completed", "Jobs completed", "completed_total"),
        counter("zapq_jobs_failed", "Failed attempts", "failed_total"),
        dead,
        alive,
        kept,
        rules,
    ]
    families.extend(await _provider_families(ctx))
    families.extend(await _flow_families(ctx))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _provider_families(ctx: Any) -> list[Metric]:
    """Provider call latency (histogram) and error codes, as recorded by every sender process."""
    recorded = await provider_metrics.read(ctx.redis, ctx.namespace)
    latency = HistogramMetricFamily(
        "zapq_provider_request_seconds", "Duration of provider send calls", labels=["provider"]
    )
    errors = CounterMetricFamily(
        "zapq_provider_errors", "Provider calls that failed, by code", labels=["provider", "code"]
    )
    for provider, data in sorted(recorded.items()):
        latency.add_metric([provider], data["buckets"], data["sum"])
        for code, count in sorted(data["errors"].items()):
            errors.add_metric([provider, code], float(count))
    sends = CounterMetricFamily(
        "zapq_sends",
        "Send attempts by company, connection, outcome (sent, failed, throttled) and provider code",
        labels=["company", "connection", "outcome", "code"],
    )
    waits = CounterMetricFamily(
        "zapq_throttle_waits", "Sends deferred by a throttle (ours or the provider)", labels=["company", "connection"]
    )
    throttled: dict[tuple[str, str], int] = {}
    for company, connection, outcome, code, count in await provider_metrics.read_sends(ctx.redis, ctx.namespace):
        sends.add_metric([company, connection, outcome, code], float(count))
        if outcome == "throttled":
            throttled[(company, connection)] = throttled.get((company, connection), 0) + count
    for (company, connection), count in sorted(throttled.items()):
        waits.add_metric([company, connection], float(count))
    return [latency, errors, sends, waits]


async def _flow_families(ctx: Any) -> list[Metric]:
    """Queue wait time per queue (histogram, from every worker's starts) and inbound messages per type."""
    waits = HistogramMetricFamily(
        "zapq_queue_wait_seconds",
        "Time from a job entering its queue (or its eta) to a worker starting it",
        labels=["queue"],
    )
    for queue, data in (await queuewait.read(ctx.redis, ctx.namespace)).items():
        waits.add_metric([queue], data["buckets"], data["sum"])
    inbound = CounterMetricFamily(
        "zapq_inbound_messages",
        "Inbound messages stored, by company, connection and message type",
        labels=["company", "connection", "type"],
    )
    for company, connection, message_type, count in await inbound_metrics.read(ctx.redis, ctx.namespace):
        inbound.add_metric([company, connection, message_type], float(count))
    return [waits, inbound]
