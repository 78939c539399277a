"""Provider call metrics: latency histogram and error codes, aggregated in Redis for every API replica.

Each sender process counts in memory (no Redis call per send) and adds its counts to Redis hashes once a
second; ``GET /metrics`` reads the hashes and exports ``zapq_provider_request_seconds`` (histogram) and
``zapq_provider_errors_total{provider,code}``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from libs.keys import ProviderMetricKeys

#: Histogram bucket upper bounds (seconds).
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


def keys(namespace: str) -> tuple[str, str, str]:
    """The Redis hashes: latency bucket counts, latency sums and counts, error codes."""
    names = ProviderMetricKeys(namespace)
    return names.latency, names.latency_sum, names.errors


#: Outcomes of a send attempt, per connection: accepted, refused by the provider (``code``: Meta's error code,
#: ``network`` or ``http_<status>``), or waiting for the throttle (``code``: ``local`` — zapq's own bucket —
#: or the provider's rate-limit code). A bounded set, as the codes: Meta's are integers of a documented table.
OUTCOMES = ("sent", "failed", "throttled")


def code_label(code: object) -> str:
    """A bounded label for a provider code: an integer below 10^7, ``network``, ``local`` or ``other``."""
    text = str(code)
    if (text.isdigit() and len(text) <= 7) or text in ("network", "local", ""):
        return text
    if text.startswith("http_") and text[5:].isdigit() and len(text) == 8:
        return text
    return "other"


def bucket_label(bound: float) -> str:
    """Prometheus ``le`` label of a bucket bound."""
    return "+Inf" if math.isinf(bound) else repr(bound)


class ProviderMetrics:
    """In-process counts of provider calls, flushed to Redis by :meth:`flush`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: Counter[str] = Counter()
        self._sums: dict[str, float] = {}
        self._errors: Counter[str] = Counter()
        self._sends: Counter[str] = Counter()

    def outcome(self, company_id: int, connection_id: int, outcome: str, code: object = "") -> None:
        """Count one send attempt's outcome for its company and connection (see :data:`OUTCOMES`)."""
        with self._lock:
            self._sends[f"{company_id}|{connection_id}|{outcome}|{code_label(code)}"] += 1

    def observe(self, provider: str, seconds: float, error_code: str | None = None) -> None:
        """Record one call: its duration and, when it failed, the provider's code (or ``network``)."""
        bound = BUCKETS[bisect.bisect_left(BUCKETS, seconds)]
        with self._lock:
            self._buckets[f"{provider}|{bucket_label(bound)}"] += 1
            self._sums[f"{provider}|sum"] = self._sums.get(f"{provider}|sum", 0.0) + seconds
            self._sums[f"{provider}|count"] = self._sums.get(f"{provider}|count", 0.0) + 1
            if error_code is not None:
                self._errors[f"{provider}|{error_code}"] += 1

    async def flush(self, client: aioredis.Redis, namespace: str) -> None:
        """Add the counts gathered since the last flush to Redis."""
        with self._lock:
            buckets, sums, errors, sends = self._buckets, self._sums, self._errors, self._sends
            self._buckets, self._sums, self._errors, self._sends = Counter(), {}, Counter(), Counter()
        if not (buckets or errors or sends):
            return
        latency, latency_sum, error_key = keys(namespace)
        pipe = client.pipeline(transaction=False)
        for field, count in buckets.items():
            pipe.hincrby(latency, field, count)
        for field, value in sums.items():
            pipe.hincrbyfloat(latency_sum, field, value)
        for field, count in errors.items():
            pipe.hincrby(error_key, field, count)
        for field, count in sends.items():
            pipe.hincrby(ProviderMetricKeys(namespace).sends, field, count)
        await pipe.execute()


async def read_sends(client: aioredis.Redis, namespace: str) -> list[tuple[str, str, str, str, int]]:
    """Send outcomes so far: ``(company, connection, outcome, code, count)``."""
    raw: dict[bytes, bytes] = await client.hgetall(ProviderMetricKeys(namespace).sends)  # type: ignore[misc]
    rows = []
    for field, value in raw.items():
        company, connection, outcome, code = field.decode().split("|", 3)
        rows.append((company, connection, outcome, code, int(value)))
    return sorted(rows)


async def read(client: aioredis.Redis, namespace: str) -> dict[str, Any]:
    """Everything recorded so far: ``{provider: {"buckets": [(le, cumulative)], "sum", "count", "errors"}}``."""
    latency, latency_sum, error_key = keys(namespace)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(latency)
    pipe.hgetall(latency_sum)
    pipe.hgetall(error_key)
    raw_buckets, raw_sums, raw_errors = await pipe.execute()
    out: dict[str, Any] = {}

    def entry(provider: str) -> dict[str, Any]:
        return out.setdefault(provider, {"counts": Counter(), "sum": 0.0, "count": 0, "errors": {}})

    for field, value in raw_buckets.items():
        provider, le = field.decode().split("|", 1)
        entry(provider)["counts"][le] += int(value)
    for field, value in raw_sums.items():
        provider, what = field.decode().split("|", 1)
        entry(provider)[what] = float(value) if what == "sum" else int(float(value))
    for field, value in raw_errors.items():
        provider, code = field.decode().split("|", 1)
        entry(provider)["errors"][code] = int(value)
    for data in out.values():
        cumulative, buckets = 0, []
        for bound in BUCKETS:
            cumulative += data["counts"].get(bucket_label(bound), 0)
            buckets.append((bucket_label(bound), cumulative))
        data["buckets"] = buckets
    return out
