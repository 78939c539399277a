"""``events``: delivering events to CRM endpoints — throughput, latency under inbound load, isolation.

Three phases, each with ``dramatiq services.event_dispatcher -p 1 -t 8`` (one process: its publisher and its
pumps) and ``bench.receiver`` (raw asyncio + httptools, answering every POST after 50 ms):

1. **Throughput.** ``N`` ``message.received`` events of 5,000 conversations are inserted in one transaction
   while the dispatcher idles; the clock runs from that commit until the receiver has them all. Baseline in
   the same run: one Dramatiq job per delivery (``bench.bare_events``: a plain async actor, one signed httpx
   POST per job, ``-p 1 -t 8``) to the same receiver.
2. **Latency.** The real edge and ingest worker beside the dispatcher; 500 signed inbound webhooks/s (paced,
   open loop) for a few seconds; per webhook, the time from the edge's 200 to the receiver's arrival of its
   ``message.received`` event (p50, p99).
3. **Isolation.** One company with ten endpoints at 100 webhooks/s (1,000 deliveries/s): all healthy, then
   with the tenth pointing at a closed port (connection refused); the nine healthy ones' p99 latency in the
   second run against the first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from dramatiq import Message

from bench import data, loadgen
from bench.harness import BenchRun, now_ms, wait_until
from bench.jobs import EVENT_ACTOR, EVENT_QUEUE
from bench.procfs import PeakRss, cpu_seconds, worker_pids
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from bench.scenarios.ingest import UVICORN, build_requests
from libs.enqueue import enqueue_many
from libs.events import signing
from libs.ops.demo import sample_webhook
from libs.ops.processes import free_port
from libs.whatsapp import sign_meta

LATENCY_MS = 50
DISPATCHER = ["-m", "dramatiq", "services.event_dispatcher", "-p", "1", "-t", "2"]
BARE = ["-m", "dramatiq", "bench.bare_events", "-p", "1", "-t", "8"]
CONVERSATIONS = 5_000
#: Rounds of each side of the isolation comparison (all up / one down), alternating.
ISOLATION_ROUNDS = 3

INSERT_EVENTS = """
INSERT INTO events (company_id, type, conversation, occurred_at, data)
SELECT %(company)s, 'message.received', 'contact:' || (5511900000000 + g %% %(conversations)s), now(),
       jsonb_build_object('message_id', g, 'company_id', %(company)s, 'connection_id', NULL,
                          'external_id', 'wamid.BENCHEVT' || g, 'type', 'text', 'text', 'bench event ' || g,
                          'contact', jsonb_build_object('wa_id', (5511900000000 + g %% %(conversations)s)::text,
                                                        'name', NULL),
                          'media', NULL, 'context', NULL, 'reply_id', NULL, 'reaction', NULL,
                          'timestamp', zapq_iso(now()))
FROM generate_series(1, %(count)s) AS g ORDER BY g
"""


def _endpoint(conn: Any, company: int, url: str) -> int:
    row = conn.execute(
        "INSERT INTO webhook_endpoints (company_id, url, secret, rate_per_second, max_in_flight) "
        "VALUES (%s, %s, %s, 10000, 256) RETURNING id",
        (company, url, signing.new_secret()),
    ).fetchone()
    return int(row[0])


def _connection(conn: Any, company: int, number_id: str) -> None:
    conn.execute(
        "INSERT INTO connections (company_id, name, provider, status, phone_number_id, access_token) "
        "VALUES (%s, 'bench-events', 'meta', 'active', %s, %s)",
        (company, number_id, data.STORED_TOKEN),
    )


def _stats(client: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = client.get("/_bench/stats").json()
    return stats


def _count(client: httpx.Client, path: str) -> int:
    return int(_stats(client)["by_path"].get(path, 0))


def _all_received(client: httpx.Client, paths: set[str], count: int) -> Callable[[], bool]:
    """A check that every one of ``paths`` received at least ``count`` requests."""
    return lambda: all(_count(client, p) >= count for p in paths)


def _received(client: httpx.Client) -> list[tuple[str, str, float]]:
    return [(p, w, t) for p, w, t in client.get("/_bench/received").json()]


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def _latencies(
    bench: BenchRun, receiver: httpx.Client, company: int, accepted: dict[str, float], paths: set[str]
) -> list[float]:
    """ms from each webhook's acceptance to the arrival of its event, at each endpoint in ``paths``."""
    with bench.connect() as conn:
        rows = conn.execute(
            "SELECT id, data->>'external_id' FROM events WHERE company_id = %s AND type = 'message.received'",
            (company,),
        ).fetchall()
    wamid_of = {f"evt_{event_id:016x}": wamid for event_id, wamid in rows}
    out = []
    for path, webhook_id, arrived in _received(receiver):
        wamid = wamid_of.get(webhook_id)
        if path in paths and wamid in accepted:
            out.append((arrived - accepted[wamid]) * 1000)
    return out


def _inbound(bench: BenchRun, edge: str, number_id: str, rate: float, seconds: float, token: str) -> dict[str, float]:
    """POST ``rate`` signed webhooks per second for ``seconds``; the acceptance time of each accepted wamid."""
    count = int(rate * seconds)
    secret = bench.settings().meta_app_secret
    url = f"{edge}/webhooks/meta"
    requests, wamids = [], []
    for n in range(count):
        wamid = f"wamid.EVLAT{token}{n:07d}"
        body = _webhook(number_id, n, wamid)
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign_meta(body, secret)}
        requests.append(loadgen.build_request(url, body, headers))
        wamids.append(wamid)
    result = loadgen.post_paced(url, requests, rate=rate, concurrency=32, timeout=seconds + 10)
    return {w: at for w, at in zip(wamids, result.answered_at, strict=True) if at is not None}


def _webhook(number_id: str, n: int, wamid: str) -> bytes:
    return sample_webhook(wamid, number_id, sender=str(5511800000000 + n), name=f"Contact {n}", text=f"latency {n}")


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    quick = bench.quick
    n = 500 if quick else 20_000
    baseline_n = 200 if quick else 2_000
    deadline = 10.0 if quick else 30.0
    phase_s = 2.0 if quick else 6.0
    latency_rate = 100.0 if quick else 500.0
    isolation_rate = 20.0 if quick else 100.0
    result.details.update(events=n, conversations=CONVERSATIONS, receiver_latency_ms=LATENCY_MS)
    receiver_port = free_port()

    with bench.processes() as group:
        group.start(
            "event-receiver", ["-m", "bench.receiver", "--port", str(receiver_port), "--latency-ms", str(LATENCY_MS)]
        )
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        receiver = httpx.Client(base_url=receiver_url, timeout=10)
        wait_until(lambda: _ok(receiver), 15)

        # -- 1. throughput ----------------------------------------------------------------------------------
        since = now_ms()
        dispatcher = group.start("event-dispatcher", DISPATCHER)
        if not bench.wait_workers(bench.namespace, 1, since):
            raise RuntimeError(f"event dispatcher did not boot:\n{bench.log_tail('event-dispatcher')}")
        with bench.connect() as conn:
            company = data.make_company(conn, "bench-events")
            _endpoint(conn, company, f"{receiver_url}/throughput")
            # warm-up: a few events through the whole path (pools, prepared statements, connections)
            conn.execute(INSERT_EVENTS, {"company": company, "count": 200, "conversations": CONVERSATIONS})
        wait_until(lambda: _count(receiver, "/throughput") >= 200, 20)
        pids = worker_pids(dispatcher.pid)
        cpu = cpu_seconds(pids)
        with PeakRss([dispatcher.pid]) as rss:
            with bench.connect() as conn:
                started = time.time()
                conn.execute(INSERT_EVENTS, {"company": company, "count": n, "conversations": CONVERSATIONS})
            done = wait_until(lambda: _count(receiver, "/throughput") >= 200 + n, deadline, interval=0.05)
            finished = time.time()
            delivered = _count(receiver, "/throughput") - 200
        cpu_ms = 1000 * (cpu_seconds(pids) - cpu) / max(1, delivered)
        rate = delivered / (finished - started)

        bare_rate, bare_cpu_ms = _baseline(bench, receiver_url, receiver, baseline_n, deadline)
        result.add(
            Figure(
                f"events delivered/s, one dispatcher process, receiver at {LATENCY_MS} ms",
                rate if done else TIMEOUT,
                "events/s",
                bare_rate,
                Target(">=", 2_000),
            )
        )
        if not done:
            result.add(Figure(f"delivered/s within the {deadline:.0f}-s deadline ({delivered}/{n})", rate, "events/s"))
        result.add(Figure("dispatcher CPU per delivered event", cpu_ms, "ms", bare_cpu_ms))
        result.add(Figure("dispatcher peak RSS", rss.max_mb(), "MB", target=Target("<=", 150)))

        # -- 2. latency under inbound load -------------------------------------------------------------------
        since = now_ms()
        group.start("ingest-workers", ["-m", "dramatiq", "services.webhook_ingest", "-p", "1", "-t", "8"])
        edge, _ = bench.start_server(
            group,
            "ingest-edge",
            ["-m", "uvicorn", "services.webhook_ingest.app:app", *UVICORN, "--workers", "1"],
            "/healthz",
        )
        if not bench.wait_workers(bench.namespace, 2, since):
            raise RuntimeError(f"ingest workers did not boot:\n{bench.log_tail('ingest-workers')}")
        with bench.connect() as conn:
            inbound_company = data.make_company(conn, "bench-events-inbound")
            _connection(conn, inbound_company, "106540352250001")
            _endpoint(conn, inbound_company, f"{receiver_url}/latency")
        # warm the edge (and the group commit's pools) with the ingest scenario's requests
        loadgen.post_all(
            f"{edge}/webhooks/meta",
            build_requests(f"{edge}/webhooks/meta", bench.settings().meta_app_secret, 0, 50, bench.token),
            concurrency=8,
            timeout=10,
        )
        accepted = _inbound(bench, edge, "106540352250001", latency_rate, phase_s, bench.token)
        wait_until(lambda: _count(receiver, "/latency") >= len(accepted), 15, interval=0.1)
        latencies = _latencies(bench, receiver, inbound_company, accepted, {"/latency"})
        result.details["latency"] = {
            "accepted": len(accepted),
            "measured": len(latencies),
            "rate": latency_rate,
            "breakdown_ms": {
                "accepted_to_stored": _stored_after(bench, inbound_company, accepted),
                **_breakdown(bench, inbound_company),
            },
        }
        result.add(
            Figure(
                f"inbound accepted → CRM received p50 ({latency_rate:.0f} webhooks/s)",
                _percentile(latencies, 0.5),
                "ms",
                target=Target("<=", 100),
            )
        )
        result.add(
            Figure(
                f"inbound accepted → CRM received p99 ({latency_rate:.0f} webhooks/s)",
                _percentile(latencies, 0.99),
                "ms",
                target=Target("<=", 500),
            )
        )

        # -- 3. one endpoint down among ten ------------------------------------------------------------------
        # Rounds alternate (all up, one down, all up, …) so a drift of this shared machine's load falls on both
        # sides alike. Each round has its own company, number and ten endpoints; in a "down" round the tenth
        # refuses connections from the start, and it is disabled when the round ends, so no later round
        # carries its retries.
        up_latencies: list[float] = []
        down_latencies: list[float] = []
        rounds = 1 if quick else ISOLATION_ROUNDS
        for round_no in range(2 * rounds):
            down = round_no % 2 == 1
            number_id = f"1065403522{round_no + 10:05d}"
            with bench.connect() as conn:
                company = data.make_company(conn, f"bench-events-isolation-{round_no}")
                _connection(conn, company, number_id)
                paths = [f"/iso{round_no}-{i}" for i in range(10)]
                urls = [f"{receiver_url}{path}" for path in paths]
                if down:  # nothing listens there: connection refused
                    urls[-1] = f"http://127.0.0.1:{free_port()}/down"
                endpoints = [_endpoint(conn, company, url) for url in urls]
            healthy = set(paths[:9])
            accepted = _inbound(bench, edge, number_id, isolation_rate, phase_s, f"{bench.token}i{round_no}")
            wait_until(_all_received(receiver, healthy, len(accepted)), 15, interval=0.1)
            (down_latencies if down else up_latencies).extend(_latencies(bench, receiver, company, accepted, healthy))
            if down:
                with bench.connect() as conn:
                    conn.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = %s", (endpoints[-1],))
        up_p99, down_p99 = _percentile(up_latencies, 0.99), _percentile(down_latencies, 0.99)
        result.details["isolation"] = {
            "all_up": len(up_latencies),
            "one_down": len(down_latencies),
            "rate": isolation_rate,
            "rounds_each": rounds,
            "p50_ms": [round(_percentile(up_latencies, 0.5), 1), round(_percentile(down_latencies, 0.5), 1)],
        }
        label = "healthy endpoints' delivery p99, one of ten refusing connections (baseline: all ten up)"
        result.add(Figure(label, down_p99, "ms", up_p99))
        result.add(
            Figure(
                "  … that p99 ÷ the all-up p99",
                down_p99 / up_p99 if up_p99 else float("nan"),
                "×",
                target=Target("<=", 1.2),
            )
        )
        receiver.close()


#: Where an event's time goes (ms, p50 / p99): fact committed → published → request started → answered.
BREAKDOWN = """
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM ev.published_at - ev.created_at)),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
         ORDER BY extract(epoch FROM a.attempted_at - ev.published_at) - a.latency_ms / 1000.0),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a.latency_ms / 1000.0)
FROM events ev JOIN event_deliveries d ON d.event_id = ev.id JOIN delivery_attempts a ON a.delivery_id = d.id
WHERE ev.company_id = %s
"""


def _stored_after(bench: BenchRun, company: int, accepted: dict[str, float]) -> list[float]:
    """p50 / p99 ms from the edge's 200 to the start of the worker's transaction that stored the message."""
    with bench.connect() as conn:
        rows = conn.execute(
            "SELECT data->>'external_id', extract(epoch FROM created_at) FROM events "
            "WHERE company_id = %s AND type = 'message.received'",
            (company,),
        ).fetchall()
    waits = [(float(at) - accepted[w]) * 1000 for w, at in rows if w in accepted]
    return [round(_percentile(waits, 0.5), 1), round(_percentile(waits, 0.99), 1)]


def _breakdown(bench: BenchRun, company: int) -> dict[str, list[float]]:
    with bench.connect() as conn:
        row = conn.execute(BREAKDOWN, (company,)).fetchone()
    names = ("committed_to_published", "published_to_request", "request")
    return {name: [round(v * 1000, 1) for v in values or []] for name, values in zip(names, row or (), strict=False)}


def _ok(client: httpx.Client) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return client.get("/healthz").status_code == 200
    return False


def _baseline(
    bench: BenchRun, receiver_url: str, receiver: httpx.Client, count: int, deadline: float
) -> tuple[float, float]:
    """One Dramatiq job per delivery (``bench.bare_events``) to the same receiver: deliveries/s, CPU ms each."""
    namespace = bench.sub_namespace("bare")
    secret = signing.new_secret()
    url = f"{receiver_url}/bare"
    body = json.dumps({"type": "message.received", "timestamp": "2026-01-01T00:00:00Z", "data": {"n": 0}})

    def job(i: int) -> Message[Any]:
        headers = signing.headers(f"evt_bare{i:08d}", body.encode(), [secret], now=dt.datetime.now(dt.UTC))
        kwargs = {"url": url, "headers": headers, "body": body}
        return Message(queue_name=EVENT_QUEUE, actor_name=EVENT_ACTOR, args=(), kwargs=kwargs, options={})

    with bench.processes(ZAPQ_REDIS_NAMESPACE=namespace) as group:
        since = now_ms()
        bare = group.start("bare-events", BARE)
        if not bench.wait_workers(namespace, 1, since):
            raise RuntimeError(f"bare workers did not boot:\n{bench.log_tail('bare-events')}")
        pids = worker_pids(bare.pid)
        cpu = cpu_seconds(pids)
        started = time.time()
        enqueue_many(bench.redis, namespace, (job(i) for i in range(count)))
        wait_until(lambda: _count(receiver, "/bare") >= count, deadline, interval=0.05)
        done = _count(receiver, "/bare")
        rate = done / (time.time() - started)
        cpu_ms = 1000 * (cpu_seconds(pids) - cpu) / max(1, done)
    return rate, cpu_ms
