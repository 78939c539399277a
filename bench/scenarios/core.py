"""``core``: no-op jobs through zapq's whole middleware stack versus bare Dramatiq, plus enqueue rates.

Drain method (identical for both stacks, see ``bench/README.md``): the workers are started and booted
first (every process heartbeats), a small warm-up batch is drained, then all jobs are made to appear in the
queue at one instant — built under a staging key and ``RENAME``d into place in one ``MULTI`` — and the clock
runs from that instant until the queue's payload hash (``<ns>:bench.msgs``, emptied by acks) is empty.
Neither worker boot time nor enqueue time is in the figure.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from bench import bullmq_baseline
from bench.harness import BenchRun, now_ms, wait_until
from bench.jobs import NOOP, QUEUE, Noop
from bench.procfs import PeakRss, cpu_seconds, server_pids
from bench.report import Figure, ScenarioResult, Target
from libs.broker import build_broker
from libs.enqueue import enqueue_many
from libs.ops.processes import ProcessGroup

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


def _timed(run: BenchRun, jobs: int, timeout: float, remaining: Callable[[], int], started: float) -> dict[str, Any]:
    """Poll ``remaining()`` from ``started`` until it is 0 (or ``timeout``); the drain's figures."""
    first_ack: float | None = None

    def drained() -> bool:
        nonlocal first_ack
        left = remaining()
        if first_ack is None and left < jobs:
            first_ack = time.time()
        return left == 0

    if not wait_until(drained, timeout):
        left = remaining()
        return {"timeout": True, "left": left, "partial_jobs_per_s": (jobs - left) / (time.time() - started)}
    finished = time.time()
    return {
        "seconds": round(finished - started, 3),
        "jobs_per_s": jobs / (finished - started),
        "first_ack_after_s": round((first_ack or finished) - started, 3),
    }


def _drain(run: BenchRun, namespace: str, jobs: int, timeout: float) -> dict[str, Any]:
    """Make ``jobs`` jobs appear at once and time the booted Dramatiq workers until every one is acked."""
    client = run.redis
    payloads = f"{namespace}:{QUEUE}.msgs"
    _stage(client, namespace, 0, WARMUP, atomic=False)
    if not wait_until(lambda: run.hlen(payloads) == 0, 30):
        return {"error": "warm-up jobs were not drained within 30 s"}
    started = _stage(client, namespace, WARMUP, jobs, atomic=True)
    return _timed(run, jobs, timeout, lambda: run.hlen(payloads), started)


def _drain_bullmq(run: BenchRun, prefix: str, jobs: int, timeout: float) -> dict[str, Any]:
    """The same drain for the BullMQ worker: warm-up, fill the paused queue, resume, wait until empty."""
    bullmq_baseline.fill(prefix, 0, WARMUP, paused=False)
    if not wait_until(lambda: bullmq_baseline.left(run.redis, prefix) == 0, 30):
        return {"error": "warm-up jobs were not drained within 30 s"}
    bullmq_baseline.fill(prefix, WARMUP, jobs, paused=True)
    started = bullmq_baseline.resume(run.redis, prefix)
    return _timed(run, jobs, timeout, lambda: bullmq_baseline.left(run.redis, prefix), started)


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


@dataclass
class Stack:
    """One worker set of the drain comparison and what its drains measured."""

    name: str
    label: str
    namespace: str
    processes: int
    pids: list[int] = field(default_factory=list)
    drains: list[dict[str, Any]] = field(default_factory=list)
    cpu_s: float = 0.0
    jobs: int = 0
    peak_rss_mb: list[float] = field(default_factory=list)

    @property
    def jobs_per_s(self) -> float | None:
        """Median over the rounds (a round that hit its deadline counts with its partial rate)."""
        rates = [d.get("jobs_per_s", d.get("partial_jobs_per_s")) for d in self.drains]
        numbers = [rate for rate in rates if isinstance(rate, int | float)]
        return statistics.median(numbers) if numbers else None

    @property
    def cpu_us_per_job(self) -> float | None:
        """Worker CPU time per job over every round (warm-ups included in both numerator and denominator)."""
        return round(1e6 * self.cpu_s / self.jobs, 1) if self.jobs else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready details."""
        return {
            "label": self.label,
            "processes": self.processes,
            "rounds": self.drains,
            "median_jobs_per_s": self.jobs_per_s,
            "cpu_us_per_job": self.cpu_us_per_job,
            "peak_rss_mb": self.peak_rss_mb,
        }


def _boot(bench: BenchRun, stack: Stack, stack_group: ProcessGroup, since: int) -> int:
    """Start one stack's workers; returns the pid whose children (or itself) are the workers."""
    if stack.name == "bullmq":
        return bullmq_baseline.start_worker(stack_group, f"core-{stack.label}", stack.namespace).pid
    module = "bench.core_actors" if stack.name == "zapq" else "bench.bare_actors"
    argv = ["-m", "dramatiq", module, "-p", str(stack.processes), "-t", str(THREADS)]
    master = stack_group.start(f"core-{stack.label}", argv)
    if not bench.wait_workers(stack.namespace, stack.processes, since):
        raise RuntimeError(f"{stack.label} workers did not boot:\n{bench.log_tail('core-' + stack.label)}")
    return master.pid


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    jobs = 500 if bench.quick else 20_000
    single = 50 if bench.quick else 1_000
    bulk = 1_000 if bench.quick else 20_000
    drain_timeout = 10.0 if bench.quick else 30.0
    rounds = 1 if bench.quick else 3
    process_counts = (1,) if bench.quick else (1, 2)
    skipped = bullmq_baseline.ensure_installed(timeout=60.0 if bench.quick else 180.0)
    if skipped:
        print(f"bench: core: BullMQ baseline {skipped}", flush=True)
    result.details.update(jobs=jobs, rounds=rounds, threads=THREADS, single=single, bulk=bulk)
    result.details["bullmq"] = (
        {"skipped": skipped}
        if skipped
        else {"version": bullmq_baseline.version(), "workers": 1, "concurrency": bullmq_baseline.CONCURRENCY}
    )

    rates = _enqueue_rates(bench, single, bulk)
    result.details["enqueue"] = rates
    result.mark("enqueue")

    stacks = [
        Stack(name, f"{name}-p{count}", bench.sub_namespace(f"{name}-p{count}"), count)
        for count in process_counts
        for name in ("zapq", "bare")
    ]
    if not skipped:
        stacks.append(Stack("bullmq", "bullmq", bench.sub_namespace("bullmq"), 1))
    # Every worker set boots first (idle workers only poll Redis or block on it), then the drains run one at
    # a time, in rounds whose order rotates so that no stack always runs first.
    with contextlib.ExitStack() as stack_of_groups:
        since = now_ms()
        masters: dict[str, int] = {}
        for stack in stacks:
            group = stack_of_groups.enter_context(bench.processes(ZAPQ_REDIS_NAMESPACE=stack.namespace))
            masters[stack.label] = _boot(bench, stack, group, since)
        for stack in stacks:
            stack.pids = server_pids(masters[stack.label])
        result.mark("boot")
        for round_no in range(rounds):
            shift = round_no % len(stacks)
            for stack in stacks[shift:] + stacks[:shift]:
                cpu = cpu_seconds(stack.pids)
                with PeakRss([masters[stack.label]]) as rss:
                    if stack.name == "bullmq":
                        drain = _drain_bullmq(bench, stack.namespace, jobs, drain_timeout)
                    else:
                        drain = _drain(bench, stack.namespace, jobs, drain_timeout)
                stack.cpu_s += cpu_seconds(stack.pids) - cpu
                stack.jobs += jobs + WARMUP
                stack.drains.append({"round": round_no + 1, **drain})
                peaks = [round(peak.mb, 1) for peak in rss.result()]
                stack.peak_rss_mb = [max(a, b) for a, b in zip(peaks, stack.peak_rss_mb or peaks, strict=False)]
        result.mark("drains")
    result.details["drain"] = {stack.label: stack.summary() for stack in stacks}
    _figures(result, stacks, skipped)


def _figures(result: ScenarioResult, stacks: list[Stack], skipped: str | None) -> None:
    by_label = {stack.label: stack for stack in stacks}
    bullmq = by_label.get("bullmq")
    bullmq_note = f"baseline: BullMQ {result.details['bullmq'].get('version')}, 1 Node worker, concurrency 50"
    if skipped:
        result.add(Figure("BullMQ baseline", skipped))
    for count in sorted({stack.processes for stack in stacks if stack.name == "zapq"}):
        zapq, bare = by_label[f"zapq-p{count}"], by_label[f"bare-p{count}"]
        timeouts = sum(1 for stack in (zapq, bare) for drain in stack.drains if drain.get("timeout"))
        note = f"median of {len(zapq.drains)} rounds" + (f"; {timeouts} round(s) hit the deadline" if timeouts else "")
        if bullmq is not None:
            rate = Figure(f"no-op jobs/s zapq -p{count} -t{THREADS}", zapq.jobs_per_s, "jobs/s", bullmq.jobs_per_s)
            rate.note = f"{note}; {bullmq_note}"
            result.add(rate)
            bound = 1.2 if count >= 2 else 0.9
            result.add(Figure(f"zapq -p{count} ÷ BullMQ", rate.ratio, "×", target=Target(">=", bound)))
        vs_bare = Figure(f"no-op jobs/s zapq -p{count} vs bare Dramatiq -p{count}", zapq.jobs_per_s, "jobs/s")
        vs_bare.baseline, vs_bare.note = bare.jobs_per_s, note
        result.add(vs_bare)
        result.add(Figure(f"zapq -p{count} ÷ bare Dramatiq", vs_bare.ratio, "×", target=Target(">=", 2.5)))
        cpu_base = bullmq.cpu_us_per_job if bullmq is not None else bare.cpu_us_per_job
        who = "BullMQ" if bullmq is not None else "bare Dramatiq"
        result.add(Figure(f"worker CPU per no-op job, zapq -p{count} (vs {who})", zapq.cpu_us_per_job, "µs", cpu_base))
        result.add(Figure(f"worker CPU per no-op job, bare Dramatiq -p{count}", bare.cpu_us_per_job, "µs"))
    zapq_rss = max((mb for stack in stacks if stack.name == "zapq" for mb in stack.peak_rss_mb), default=None)
    rss_base = max(bullmq.peak_rss_mb, default=None) if bullmq is not None else None
    result.add(Figure(f"peak RSS per worker process (zapq vs {'BullMQ' if bullmq else '-'})", zapq_rss, "MB", rss_base))
    rates = result.details["enqueue"]
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
