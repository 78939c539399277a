"""``core``: no-op jobs through zapq's whole middleware stack versus bare Dramatiq, plus enqueue rates.

Drain method (identical for both stacks, see ``bench/README.md``): the workers are started and booted
first (every process heartbeats), a small warm-up batch is drained, then all jobs are made to appear in the
queue at one instant — built under a staging key and ``RENAME``d into place in one ``MULTI`` — and the clock
runs from that instant until the queue's payload hash (``<ns>:bench.msgs``, emptied by acks) is empty.
Neither worker boot time nor enqueue time is in the figure.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from bench.harness import BenchRun, now_ms, wait_until
from bench.jobs import NOOP, QUEUE, Noop
from bench.procfs import PeakRss, cpu_seconds, worker_pids
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from libs.broker import build_broker
from libs.enqueue import enqueue_many

THREADS = 8
WARMUP = 200
BULK_CHUNK = 1_000
#: Jobs per alternating round of the one-by-one enqueue comparison.
SINGLE_ROUND = 100
#: Target of bulk enqueues (jobs/s).
BULK_TARGET = 12_000


def _message(n: int) -> Message[Any]:
    return NOOP.message(Noop(n))


def _stage(client: redis.Redis, namespace: str, first: int, count: int, *, atomic: bool) -> float:
    """Put ``count`` no-op jobs in ``<ns>:bench``; with ``atomic`` they all appear at once. Returns that time."""
    queue = f"{namespace}:{QUEUE}"
    target = f"{queue}.staging" if atomic else queue
    for start in range(first, first + count, BULK_CHUNK):
        pipe = client.pipeline(transaction=False)
        ids, payloads = [], {}
        for n in range(start, min(first + count, start + BULK_CHUNK)):
            redis_id = str(uuid.uuid4())
            ids.append(redis_id)
            payloads[redis_id] = _message(n).copy(options={"redis_message_id": redis_id}).encode()
        pipe.hset(f"{target}.msgs", mapping=payloads)
        pipe.rpush(target, *ids)
        pipe.execute()
    if atomic:
        pipe = client.pipeline(transaction=True)
        pipe.rename(f"{target}.msgs", f"{queue}.msgs")
        pipe.rename(target, queue)
        pipe.execute()
    return time.time()


def _drain(run: BenchRun, namespace: str, jobs: int, timeout: float) -> dict[str, Any]:
    """Make ``jobs`` jobs appear at once and time the booted workers until every one is acked."""
    client = run.redis
    payloads = f"{namespace}:{QUEUE}.msgs"
    _stage(client, namespace, 0, WARMUP, atomic=False)
    if not wait_until(lambda: run.hlen(payloads) == 0, 30):
        return {"error": "warm-up jobs were not drained within 30 s"}
    started = _stage(client, namespace, WARMUP, jobs, atomic=True)
    first_ack: float | None = None

    def drained() -> bool:
        nonlocal first_ack
        left = run.hlen(payloads)
        if first_ack is None and left < jobs:
            first_ack = time.time()
        return left == 0

    if not wait_until(drained, timeout):
        left = run.hlen(payloads)
        return {"timeout": True, "left": left, "partial_jobs_per_s": (jobs - left) / (time.time() - started)}
    finished = time.time()
    return {
        "seconds": finished - started,
        "jobs_per_s": jobs / (finished - started),
        "first_ack_after_s": (first_ack or finished) - started,
    }


def _enqueue_rates(run: BenchRun, single: int, bulk: int) -> dict[str, float]:
    """Single ``broker.enqueue`` (zapq contract vs bare ``actor.send``) and bulk enqueues, in jobs/s."""
    rates: dict[str, float] = {}
    zapq_ns, bare_ns = run.sub_namespace("enq"), run.sub_namespace("enq-bare")
    zapq_broker = build_broker(run.settings(redis_namespace=zapq_ns))
    bare_broker = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=bare_ns)

    def noop(n: int) -> None:
        """The bare no-op actor, declared on the bare broker."""

    bare_actor = dramatiq.actor(broker=bare_broker, actor_name=NOOP.actor_name, queue_name=QUEUE)(noop)
    # The two sides alternate in rounds, so that both see the same noise of a shared machine.
    spent = {"single_zapq": 0.0, "single_bare": 0.0, "bulk_zapq": 0.0, "bulk_raw_pipeline": 0.0}
    try:
        for first in range(0, single, SINGLE_ROUND):
            numbers = range(first, min(single, first + SINGLE_ROUND))
            started = time.perf_counter()
            for n in numbers:
                NOOP.send(Noop(n), broker=zapq_broker)
            spent["single_zapq"] += time.perf_counter() - started
            started = time.perf_counter()
            for n in numbers:
                bare_actor.send(n)
            spent["single_bare"] += time.perf_counter() - started
        for first in range(0, bulk, BULK_CHUNK):
            count = min(BULK_CHUNK, bulk - first)
            started = time.perf_counter()
            enqueue_many(run.redis, zapq_ns, (_message(n) for n in range(first, first + count)))
            spent["bulk_zapq"] += time.perf_counter() - started
            started = time.perf_counter()
            _stage(run.redis, bare_ns, first, count, atomic=False)
            spent["bulk_raw_pipeline"] += time.perf_counter() - started
        for key, seconds in spent.items():
            rates[key] = (single if key.startswith("single") else bulk) / seconds
    finally:
        zapq_broker.close()
        bare_broker.close()
    for namespace in (zapq_ns, bare_ns):
        keys = list(run.redis.scan_iter(match=f"{namespace}:*", count=5000))
        if keys:
            run.redis.delete(*keys)
    return rates


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    jobs = 500 if bench.quick else 20_000
    single = 50 if bench.quick else 1_000
    bulk = 1_000 if bench.quick else 20_000
    drain_timeout = 10.0 if bench.quick else 12.0
    processes = 1 if bench.quick else 2
    result.details.update(jobs=jobs, processes=processes, threads=THREADS, single=single, bulk=bulk)

    rates = _enqueue_rates(bench, single, bulk)
    result.details["enqueue"] = rates

    bare_ns = bench.sub_namespace("bare")
    stacks = {"zapq": ("bench.core_actors", bench.namespace), "bare": ("bench.bare_actors", bare_ns)}
    drains: dict[str, dict[str, Any]] = {}
    peaks: dict[str, list[float]] = {}
    # Both worker sets boot together (idle workers only poll Redis), then each drain runs alone.
    with bench.processes() as zapq_group, bench.processes(ZAPQ_REDIS_NAMESPACE=bare_ns) as bare_group:
        since = now_ms()
        masters = {
            name: group.start(f"core-{name}", ["-m", "dramatiq", stacks[name][0], "-p", str(processes), "-t", "8"])
            for name, group in (("zapq", zapq_group), ("bare", bare_group))
        }
        for name, (_, namespace) in stacks.items():
            if not bench.wait_workers(namespace, processes, since):
                raise RuntimeError(f"{name} workers did not boot:\n{bench.log_tail('core-' + name)}")
        for name, (_, namespace) in stacks.items():
            pids = worker_pids(masters[name].pid)
            cpu = cpu_seconds(pids)
            with PeakRss([masters[name].pid]) as rss:
                drains[name] = _drain(bench, namespace, jobs, drain_timeout)
            drains[name]["cpu_us_per_job"] = round(1e6 * (cpu_seconds(pids) - cpu) / (jobs + WARMUP), 1)
            peaks[name] = [round(peak.mb, 1) for peak in rss.result()]
    result.details["drain"] = drains
    result.details["peak_rss_mb"] = peaks

    def rate(name: str) -> float | str | None:
        drain = drains[name]
        return TIMEOUT if drain.get("timeout") else drain.get("jobs_per_s")

    jobs_per_s = Figure(f"no-op jobs/s (-p{processes} -t{THREADS})", rate("zapq"), "jobs/s", rate("bare"))
    result.add(jobs_per_s)
    if jobs_per_s.ratio is not None:
        result.add(Figure("no-op jobs/s, zapq ÷ bare Dramatiq", jobs_per_s.ratio, "×", target=Target(">=", 2.5)))
    if any(drain.get("timeout") for drain in drains.values()):
        partial = {name: drain.get("partial_jobs_per_s", drain.get("jobs_per_s")) for name, drain in drains.items()}
        label = f"no-op jobs/s within the {drain_timeout:.0f}-s deadline"
        result.add(Figure(label, partial["zapq"], "jobs/s", partial["bare"]))
    result.add(
        Figure(
            "worker CPU per no-op job",
            drains["zapq"].get("cpu_us_per_job"),
            "µs",
            drains["bare"].get("cpu_us_per_job"),
        )
    )
    result.add(
        Figure(
            "peak RSS per worker process",
            max(peaks["zapq"], default=None),
            "MB",
            max(peaks["bare"], default=None),
        )
    )
    result.add(Figure("enqueue one by one (send)", rates["single_zapq"], "jobs/s", rates["single_bare"]))
    result.add(
        Figure(
            f"enqueue bulk (enqueue_many x{BULK_CHUNK})",
            rates["bulk_zapq"],
            "jobs/s",
            rates["bulk_raw_pipeline"],
            Target(">=", BULK_TARGET),
            note="baseline: raw pipelined HSET+RPUSH of the same messages (Dramatiq has no bulk enqueue)",
        )
    )
