"""``send``: the message-sender against a fake Graph API answering after 200 ms, in two phases.

A. throughput: ``N`` normal-tier messages over 100 numbers (80/s each, the fake's own per-number limit
   on), one ``dramatiq services.message_sender -p 1 -t 8`` process: sends/s between the first and the last
   send the fake recorded, CPU per send and the worker's peak RSS. Messages phase A could not send within
   its deadline are cancelled (rows and queue), so they do not leak into phase B.
B. with the fake's limit off, at once: **throttle accuracy** — one number at 80/s and 2,000 messages; the
   most sends the fake recorded in any 1-s sliding window (and the same for a number at 10/s, which the
   sender saturates even when it cannot reach 80/s on one number); **urgent latency** — 50,000 low-tier messages
   queued, then one urgent message every 200 ms (20), latency from its enqueue to its ``sending_at``
   (the claim); and the **baseline** — ``bench.bare_send`` (a plain async Dramatiq actor doing one httpx POST
   per job, ``-p 1 -t 8``, its own process and namespace), whose rate is bound by threads ÷ latency and
   barely feels the CPU the other two take. They share phase B to keep the run under two minutes.
C. phase A again, the fake's limit back on, once per maintained HTTP transport under the provider client
   (``ZAPQ_HTTP_TRANSPORT=aiohttp``: httpx over aiohttp, ``httpx``: httpx's default), each a fresh sender
   process in its own namespace with its own 100 numbers: sends/s and CPU per send beside phase A's (the
   ``lean`` transport, the default), so one run shows all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from dramatiq import Message

from bench import data
from bench.harness import BenchRun, now_ms, wait_until
from bench.jobs import SEND_ACTOR, SEND_QUEUE
from bench.procfs import PeakRss, cpu_seconds, worker_pids
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from libs import contracts
from libs.enqueue import enqueue_many

LATENCY_MS = 200
NUMBERS = 100
RATE = 80
#: A second number limited below what the sender reaches on this machine, so its throttle is exercised.
SLOW_RATE = 10
URGENT_EVERY_S = 0.2
#: The fake Graph API, on uvloop + httptools so that it absorbs well over 1,000 requests/s.
FAKE_ARGV = ["-m", "tests.fakes.meta", "--port", "{port}", "--latency-ms", str(LATENCY_MS), "--rate", str(RATE)]
FAKE_ARGV += ["--http", "httptools", "--loop", "uvloop"]
SENDER = ["-m", "dramatiq", "services.message_sender", "-p", "1", "-t", "8"]
BARE = ["-m", "dramatiq", "bench.bare_send", "-p", "1", "-t", "8"]
#: Phase C: the maintained transports measured against phase A's ``lean`` (their phone number id prefixes).
ALTERNATE_TRANSPORTS = {"aiohttp": "1100", "httpx": "1200"}
#: Phase D: phase A with tracing on, its numbers' prefix, and the OTLP/HTTP sink it exports to.
TRACED_PREFIX = "1300"
OTLP_SINK_ARGV = ["-m", "bench.receiver", "--port", "{port}", "--latency-ms", "0"]


@dataclass(frozen=True)
class Sizes:
    """How many messages each part uses, and how long each phase may take."""

    main: int
    throttle: int
    slow: int
    bare: int
    low: int
    urgent: int
    main_timeout: float
    phase_b_timeout: float
    urgent_wait: float

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        """Smaller numbers for ``--quick``."""
        if quick:
            return cls(
                main=300,
                throttle=80,
                slow=20,
                bare=40,
                low=2_000,
                urgent=5,
                main_timeout=3,
                phase_b_timeout=2,
                urgent_wait=2,
            )
        return cls(
            main=10_000,
            throttle=2_000,
            slow=200,
            bare=400,
            low=50_000,
            urgent=20,
            main_timeout=10,
            phase_b_timeout=10,
            urgent_wait=6,
        )


@dataclass
class Sent:
    """Times (fake's ``received_at``) of the sends of one part."""

    times: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """Sends per second from the first to the last."""
        return span_rate(self.times)


def configure(fake: str, **config: Any) -> None:
    """Change the fake Graph API's behaviour at run time."""
    httpx.post(f"{fake}/_fake/config", json=config, timeout=10).raise_for_status()


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` inside any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, at in enumerate(ordered):
        while ordered[left] <= at - window:
            left += 1
        best = max(best, right - left + 1)
    return best


def busiest_window(times: list[float], window: float = 1.0) -> list[float]:
    """The times of the fullest window, relative to its first send (evidence for the throttle figures)."""
    ordered = sorted(times)
    best: tuple[int, int] = (0, 0)
    left = 0
    for right, at in enumerate(ordered):
        while ordered[left] <= at - window:
            left += 1
        if right - left + 1 > best[1] - best[0]:
            best = (left, right + 1)
    chosen = ordered[best[0] : best[1]]
    return [round(t - chosen[0], 3) for t in chosen]


def span_rate(times: list[float]) -> float | None:
    """Events per second from the first to the last of ``times``."""
    if len(times) < 2:
        return None
    ordered = sorted(times)
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def _finished(bench: BenchRun, ids: list[int]) -> int:
    with bench.connect() as conn:
        counts = data.status_counts(conn, ids)
    return counts.get("sent", 0) + counts.get("failed", 0)


def _all_finished(bench: BenchRun, ids: list[int]) -> Callable[[], bool]:
    return lambda: _finished(bench, ids) >= len(ids)


def _cancel_rest(bench: BenchRun, ids: list[int], queue: str, namespace: str | None = None) -> int:
    """Cancel what is still queued and drop the queue, so a timed-out phase does not leak into the next.

    Rows the running sender holds locked (claiming them) are skipped, not waited for: waiting deadlocked against
    a claim locking the same rows in another order."""
    ns = namespace or bench.namespace
    bench.redis.delete(f"{ns}:{queue}", f"{ns}:{queue}.msgs")
    with bench.connect() as conn:
        cursor = conn.execute(
            "UPDATE messages SET status = 'cancelled' WHERE id IN (SELECT id FROM messages WHERE id = ANY(%s)"
            " AND status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED)",
            (ids,),
        )
        return cursor.rowcount


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    sizes = Sizes.for_run(bench.quick)
    result.details.update(sizes=sizes.__dict__, latency_ms=LATENCY_MS, numbers=NUMBERS, rate=RATE)
    ns, bare_ns = bench.namespace, bench.sub_namespace("bare")

    result.mark("start")
    with bench.processes() as servers:
        fake, _ = bench.start_server(servers, "fake-meta", FAKE_ARGV, "/_fake/health")
        result.mark("fake boot")
        configure(fake, record_payloads=False)
        with (
            bench.processes(ZAPQ_META_GRAPH_URL=fake) as workers,
            bench.processes(ZAPQ_META_GRAPH_URL=fake, ZAPQ_REDIS_NAMESPACE=bare_ns) as bare_workers,
        ):
            # The workers boot while the rows are created and enqueued; phase A is timed by the fake's clock.
            since = now_ms()
            sender = workers.start("sender", SENDER)
            bare = bare_workers.start("bare-send", BARE)
            with bench.connect() as conn:
                company = data.make_company(conn)
                conn_ids = [cid for cid, _ in data.make_connections(conn, company, NUMBERS, prefix="1000", rate=RATE)]
                ((throttle_conn, throttle_pnid),) = data.make_connections(conn, company, 1, prefix="2000", rate=RATE)
                ((slow_conn, slow_pnid),) = data.make_connections(conn, company, 1, prefix="2001", rate=SLOW_RATE)
                main_ids = data.make_messages(
                    conn, company, conn_ids, sizes.main, priority="normal", recipient_offset=0
                )
            data.enqueue_chunked(
                bench.redis, ns, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in main_ids)
            )
            with PeakRss([sender.pid]) as sender_rss, PeakRss([bare.pid]) as bare_rss:
                if not (bench.wait_workers(ns, 1, since) and bench.wait_workers(bare_ns, 1, since)):
                    raise RuntimeError(f"workers did not boot:\n{bench.log_tail('sender')}")
                result.mark("data + worker boot")
                sender_pids = worker_pids(sender.pid)
                cpu = cpu_seconds(sender_pids)
                # A. throughput (the fake's per-number limit on)
                main_done = wait_until(_all_finished(bench, main_ids), sizes.main_timeout, interval=0.2)
                result.mark("phase A")
                phase_a_end = time.time()
                main_cpu = cpu_seconds(sender_pids) - cpu
                main_finished = _finished(bench, main_ids)
                result.details.update(
                    main_finished=main_finished,
                    main_cancelled=0 if main_done else _cancel_rest(bench, main_ids, contracts.MESSAGES),
                    sender_cpu_s_phase_a=round(main_cpu, 2),
                    sender_rss_after_a_mb=sender_rss.max_mb(),
                )

                # B. throttle accuracy + urgent latency + baseline, the fake's limit off
                configure(fake, rate_per_second=None)
                with bench.connect() as conn:
                    throttle_ids = data.make_messages(
                        conn, company, [throttle_conn], sizes.throttle, priority="normal", recipient_offset=1_000_000
                    )
                    slow_ids = data.make_messages(
                        conn, company, [slow_conn], sizes.slow, priority="normal", recipient_offset=1_500_000
                    )
                data.enqueue_chunked(
                    bench.redis,
                    ns,
                    (
                        contracts.SEND_NORMAL.message(contracts.SendMessage(i))
                        for i in _interleave(throttle_ids, slow_ids)
                    ),
                )
                bare_cpu = cpu_seconds(worker_pids(bare.pid))
                _enqueue_bare(bench, bare_ns, sizes.bare)
                phase_b_started = time.monotonic()
                result.mark("phase B setup")
                urgent = _urgent_latencies(bench, company, conn_ids, sizes)
                result.mark("urgent latency")
                left = max(1.0, sizes.phase_b_timeout - (time.monotonic() - phase_b_started))
                throttle_done = wait_until(_all_finished(bench, throttle_ids), left, interval=0.2)
                bare_done = wait_until(lambda: bench.hlen(f"{bare_ns}:{SEND_QUEUE}.msgs") == 0, 1.0)
                result.mark("phase B rest")
                bare_cpu = cpu_seconds(worker_pids(bare.pid)) - bare_cpu
                result.details["throttle_finished"] = _finished(bench, throttle_ids)
        # C. phase A over each maintained transport, one fresh sender at a time, the fake's limit back on
        configure(fake, rate_per_second=RATE)
        alternates = {
            transport: _throughput_over(bench, fake, company, transport, prefix, 4_000_000 + 1_000_000 * k, sizes)
            for k, (transport, prefix) in enumerate(ALTERNATE_TRANSPORTS.items())
        }
        result.mark("phase C (maintained transports)")
        # D. phase A again with tracing on (every span exported over OTLP/HTTP to a sink answering 200)
        sink, _ = bench.start_server(servers, "otlp-sink", OTLP_SINK_ARGV, "/healthz")
        traced = _throughput_over(
            bench,
            fake,
            company,
            "lean",
            TRACED_PREFIX,
            7_000_000,
            sizes,
            label="traced",
            extra_env={"ZAPQ_OTEL_ENDPOINT": f"{sink}/v1/traces"},
        )
        traced["exports"] = httpx.get(f"{sink}/_bench/stats", timeout=10).json()["total"]
        result.mark("phase D (tracing on)")
        sends = httpx.get(f"{fake}/_fake/sends", timeout=60).json()
        result.mark("stop workers + fetch sends")

    main_refs = {str(i) for i in main_ids}
    main = Sent([s["received_at"] for s in sends if s["client_ref"] in main_refs])
    sent_in_a = sum(1 for t in main.times if t <= phase_a_end)  # requests the fake saw during phase A
    result.details["sender_cpu_ms_per_send"] = round(1000 * main_cpu / max(1, sent_in_a), 2)
    throttle = Sent([s["received_at"] for s in sends if s["phone_number_id"] == throttle_pnid])
    slow = Sent([s["received_at"] for s in sends if s["phone_number_id"] == slow_pnid])
    baseline = Sent([s["received_at"] for s in sends if (s["client_ref"] or "").startswith("bare-")])
    result.details["bare_cpu_ms_per_send"] = round(1000 * bare_cpu / max(1, len(baseline.times)), 2)
    result.details.update(
        main_sends=len(main.times),
        throttle_sends=len(throttle.times),
        throttle_mean_rate=throttle.rate,
        slow_sends=len(slow.times),
        slow_busiest_window_s=busiest_window(slow.times),
        throttle_busiest_window_s=busiest_window(throttle.times),
        slow_mean_rate=slow.rate,
        bare_sends=len(baseline.times),
        urgent=urgent,
        sender_rss_mb=sender_rss.max_mb(),
        bare_rss_mb=bare_rss.max_mb(),
    )
    result.add(
        Figure(
            "sends/s, 1 process (-p1 -t8), lean transport",
            main.rate if main_done else TIMEOUT,
            "sends/s",
            baseline.rate if bare_done else TIMEOUT,
            Target(">=", 1_000),
        )
    )
    if not main_done:
        before = [t for t in main.times if t <= phase_a_end]
        label = f"sends/s within the {sizes.main_timeout:.0f}-s deadline ({len(before)}/{sizes.main} sent)"
        result.add(Figure(label, span_rate(before), "sends/s", baseline.rate))
    result.add(
        Figure(
            "worker CPU per send, lean transport",
            result.details["sender_cpu_ms_per_send"],
            "ms",
            result.details["bare_cpu_ms_per_send"],
        )
    )
    lean_rate = main.rate if main_done else span_rate([t for t in main.times if t <= phase_a_end])
    for transport, run_c in alternates.items():
        _add_transport_figures(
            result, transport, run_c, sends, sizes, lean_rate, result.details["sender_cpu_ms_per_send"]
        )
    _add_traced_figures(result, traced, sends, lean_rate, result.details["sender_cpu_ms_per_send"])
    result.add(Figure("sender peak RSS", sender_rss.max_mb(), "MB", bare_rss.max_mb(), Target("<=", 150)))
    label = f"max sends in any 1-s window (1 number @{RATE}/s, {len(throttle.times)}/{sizes.throttle} sent)"
    result.add(Figure(label, max_in_window(throttle.times), "sends", target=Target("<=", RATE * 1.05)))
    label = f"max sends in any 1-s window (1 number @{SLOW_RATE}/s, {len(slow.times)}/{sizes.slow} sent)"
    result.add(Figure(label, max_in_window(slow.times), "sends", target=Target("<=", SLOW_RATE * 1.05)))
    latencies = urgent["latencies_ms"]
    p50: float | str = TIMEOUT
    p99: float | str = TIMEOUT
    if latencies and not urgent["missing"]:
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    result.add(Figure(f"urgent enqueue→claim p50 (behind {sizes.low:,} low)", p50, "ms"))
    result.add(Figure("urgent enqueue→claim p99", p99, "ms", target=Target("<=", 1_000)))
    if not throttle_done:
        result.details["throttle_timeout"] = True


def _interleave(many: list[int], few: list[int]) -> list[int]:
    """``many`` with ``few`` spread evenly through it (so neither waits behind the other in the queue)."""
    step = max(1, len(many) // max(1, len(few)))
    out: list[int] = []
    rest = list(few)
    for k, item in enumerate(many, start=1):
        out.append(item)
        if k % step == 0 and rest:
            out.append(rest.pop(0))
    return out + rest


def _enqueue_bare(bench: BenchRun, namespace: str, count: int) -> None:
    messages: list[Message[Any]] = [
        Message(
            queue_name=SEND_QUEUE,
            actor_name=SEND_ACTOR,
            args=(),
            kwargs={
                "phone_number_id": f"3000{1 + n % NUMBERS:06d}",
                "to": f"+55{12_000_000_000 + n}",
                "body": f"bench message {n}",
                "client_ref": f"bare-{n}",
            },
            options={},
        )
        for n in range(count)
    ]
    enqueue_many(bench.redis, namespace, messages)


def _urgent_latencies(bench: BenchRun, company: int, conn_ids: list[int], sizes: Sizes) -> dict[str, Any]:
    """Queue the low-tier backlog, then one urgent message every 200 ms; enqueue→claim latency of each."""
    ns = bench.namespace
    with bench.connect() as conn:
        low_ids = data.make_messages(conn, company, conn_ids, sizes.low, priority="low", recipient_offset=2_000_000)
    started = time.perf_counter()
    data.enqueue_chunked(bench.redis, ns, (contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in low_ids))
    low_enqueue_s = time.perf_counter() - started
    enqueued: dict[int, float] = {}
    with bench.connect() as conn:
        next_at = time.monotonic()
        for k in range(sizes.urgent):
            (message_id,) = data.make_messages(
                conn, company, [conn_ids[k % len(conn_ids)]], 1, priority="urgent", recipient_offset=3_000_000 + k
            )
            enqueued[message_id] = time.time()
            enqueue_many(bench.redis, ns, [contracts.SEND_URGENT.message(contracts.SendMessage(message_id))])
            next_at += URGENT_EVERY_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        ids = list(enqueued)

        def claimed() -> bool:
            row = conn.execute("SELECT count(sending_at) FROM messages WHERE id = ANY(%s)", (ids,)).fetchone()
            return row is not None and int(row[0]) == len(ids)

        wait_until(claimed, sizes.urgent_wait, interval=0.1)
        rows = conn.execute(
            "SELECT id, EXTRACT(EPOCH FROM sending_at) FROM messages WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        low_sent = data.status_counts(conn, low_ids).get("sent", 0)
    latencies = [(float(at) - enqueued[int(mid)]) * 1000 for mid, at in rows if at is not None]
    return {
        "latencies_ms": sorted(round(x, 1) for x in latencies),
        "missing": len(ids) - len(latencies),
        "low_enqueue_s": round(low_enqueue_s, 2),
        "low_sent_meanwhile": low_sent,
    }


def _throughput_over(
    bench: BenchRun,
    fake: str,
    company: int,
    transport: str,
    prefix: str,
    offset: int,
    sizes: Sizes,
    *,
    label: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Phase A with ``ZAPQ_HTTP_TRANSPORT=transport`` (and ``extra_env``): a fresh sender in its own namespace
    (``label``, default the transport) and numbers."""
    bench.join_stoppers()  # the senders before it have stopped: nothing else sends or takes CPU meanwhile
    label = label or transport
    ns = bench.sub_namespace(label)
    env = {"ZAPQ_META_GRAPH_URL": fake, "ZAPQ_REDIS_NAMESPACE": ns, "ZAPQ_HTTP_TRANSPORT": transport}
    env.update(extra_env or {})
    with bench.processes(**env) as workers:
        since = now_ms()
        sender = workers.start(f"sender-{label}", SENDER)
        with bench.connect() as conn:
            conn_ids = [cid for cid, _ in data.make_connections(conn, company, NUMBERS, prefix=prefix, rate=RATE)]
            ids = data.make_messages(conn, company, conn_ids, sizes.main, priority="normal", recipient_offset=offset)
        data.enqueue_chunked(bench.redis, ns, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in ids))
        with PeakRss([sender.pid]) as rss:
            if not bench.wait_workers(ns, 1, since):
                raise RuntimeError(f"the {label} sender did not boot:\n{bench.log_tail(f'sender-{label}')}")
            pids = worker_pids(sender.pid)
            cpu = cpu_seconds(pids)
            done = wait_until(_all_finished(bench, ids), sizes.main_timeout, interval=0.2)
            ended = time.time()
            cpu = cpu_seconds(pids) - cpu
            finished = _finished(bench, ids)
            cancelled = 0 if done else _cancel_rest(bench, ids, contracts.MESSAGES, ns)
    return {
        "ids": ids,
        "done": done,
        "ended": ended,
        "cpu_s": round(cpu, 2),
        "finished": finished,
        "cancelled": cancelled,
        "rss_mb": rss.max_mb(),
    }


def _add_transport_figures(
    result: ScenarioResult,
    transport: str,
    run_c: dict[str, Any],
    sends: list[dict[str, Any]],
    sizes: Sizes,
    lean_rate: float | None,
    lean_cpu_ms: float,
) -> None:
    """Phase C's figures for one transport, phase A's (``lean``) as their baseline."""
    refs = {str(i) for i in run_c.pop("ids")}
    times = [s["received_at"] for s in sends if s["client_ref"] in refs]
    before = [t for t in times if t <= run_c["ended"]]
    run_c.update(sends=len(times), cpu_ms_per_send=round(1000 * run_c["cpu_s"] / max(1, len(before)), 2))
    result.details[f"transport_{transport}"] = run_c
    rate = span_rate(times) if run_c["done"] else TIMEOUT
    result.add(Figure(f"sends/s, 1 process, {transport} transport", rate, "sends/s", lean_rate, Target(">=", 1_000)))
    if not run_c["done"]:
        label = f"sends/s within the {sizes.main_timeout:.0f}-s deadline, {transport} ({len(before)}/{sizes.main} sent)"
        result.add(Figure(label, span_rate(before), "sends/s", lean_rate))
    result.add(Figure(f"worker CPU per send, {transport} transport", run_c["cpu_ms_per_send"], "ms", lean_cpu_ms))


def _add_traced_figures(
    result: ScenarioResult,
    run_d: dict[str, Any],
    sends: list[dict[str, Any]],
    lean_rate: float | None,
    lean_cpu_ms: float,
) -> None:
    """Phase D's figures (tracing on), phase A's (tracing off) as their baseline: the overhead in %."""
    refs = {str(i) for i in run_d.pop("ids")}
    times = [s["received_at"] for s in sends if s["client_ref"] in refs]
    before = [t for t in times if t <= run_d["ended"]]
    cpu_ms = round(1000 * run_d["cpu_s"] / max(1, len(before)), 2)
    rate = span_rate(times) if run_d["done"] else TIMEOUT
    run_d.update(sends=len(times), cpu_ms_per_send=cpu_ms)
    if isinstance(rate, float) and lean_rate:
        run_d["throughput_overhead_pct"] = round(100 * (lean_rate - rate) / lean_rate, 1)
    if lean_cpu_ms:
        run_d["cpu_overhead_pct"] = round(100 * (cpu_ms - lean_cpu_ms) / lean_cpu_ms, 1)
    result.details["tracing_on"] = run_d
    result.add(Figure("sends/s, 1 process, tracing on (OTLP/HTTP)", rate, "sends/s", lean_rate))
    result.add(Figure("worker CPU per send, tracing on", cpu_ms, "ms", lean_cpu_ms))
