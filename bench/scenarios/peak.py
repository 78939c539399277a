"""``peak``: the whole system at once, as a peak hour would load it, for 60 s.

Every service runs as deployed (one process each): the webhook edge (uvicorn) and its ingest worker, the
message-sender (``-p 1 -t 8``), the campaign-runner (``-p 1 -t 4``) and the event-dispatcher (``-p 1 -t 2``),
against the fake Graph API (200 ms per send, its per-number limit off; 100 numbers at 80/s each in zapq's
own throttle) and a local CRM receiver (``bench.receiver``, 50 ms) subscribed for every event of both
companies. For ``DURATION`` seconds, at once:

* **inbound**: signed single-message webhooks, paced (open loop) at 1,000/s on 32 keep-alive connections;
* **sends**: every 100 ms, 100 normal-tier message rows (``INSERT … SELECT``) and their jobs
  (``enqueue_many``) — 1,000 sends/s, the path the API's ``POST /messages`` takes after validation;
* **urgent**: one urgent message every 100 ms (row + job), timed from its enqueue to the fake's arrival;
* **campaign**: a running 100,000-recipient campaign (recipients inserted before the clock) is expanded a
  third of the way in (its 100 ``EXPAND_CAMPAIGN_BATCH`` jobs enqueued at once).

Afterwards the bench waits (bounded) for the inbound webhooks, the normal and urgent sends and the events
to finish; campaign sends still waiting in their lane then are counted as waiting, not lost. Counted at the
fakes: every recorded send's ``client_ref`` (the message id) — more than one record is a duplicate, a ``sent``
row without a record is lost; every delivery the receiver got — an event row never delivered is lost, an
event id delivered twice a duplicate. Redis and Postgres CPU are read from ``INFO cpu`` and from every
``postgres`` process's ``/proc/<pid>/stat``: both servers are shared with anything else on the machine.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from bench import data, loadgen
from bench.harness import BenchRun, now_ms, wait_until
from bench.procfs import PeakRss, cpu_seconds, server_pids
from bench.report import Figure, ScenarioResult, Target
from bench.scenarios.events import _endpoint, _ok
from bench.scenarios.fanout import SLICE, _campaign
from bench.scenarios.ingest import UVICORN
from bench.scenarios.send import configure, percentile, span_rate
from bench.servers import counters, postgres_cpu_s, redis_cpu_s
from libs import contracts
from libs.enqueue import enqueue_many
from libs.ops.demo import sample_webhook
from libs.ops.processes import ProcessGroup, free_port
from libs.whatsapp import sign_meta

TICK_S = 0.1
NUMBER_ID = "106540352260001"
FAKE_ARGV = ["-m", "tests.fakes.meta", "--port", "{port}", "--latency-ms", "200", "--rate", "0"]
FAKE_ARGV += ["--http", "httptools", "--loop", "uvloop"]
SERVICES = {
    "ingest-worker": ["-m", "dramatiq", "services.webhook_ingest", "-p", "1", "-t", "8"],
    "message-sender": ["-m", "dramatiq", "services.message_sender", "-p", "1", "-t", "8"],
    "campaign-runner": ["-m", "dramatiq", "services.campaign_runner", "-p", "1", "-t", "4"],
    "event-dispatcher": ["-m", "dramatiq", "services.event_dispatcher", "-p", "1", "-t", "2"],
}


@dataclass(frozen=True)
class Load:
    """Rates and sizes of one run."""

    seconds: float
    inbound_per_s: float
    sends_per_tick: int
    campaign: int
    drain_s: float

    @classmethod
    def for_run(cls, quick: bool) -> Load:
        """Tiny for ``--quick`` (it only proves every path works)."""
        if quick:
            return cls(seconds=3, inbound_per_s=50, sends_per_tick=5, campaign=1_000, drain_s=5)
        return cls(seconds=60, inbound_per_s=1_000, sends_per_tick=100, campaign=100_000, drain_s=30)


def _inbound_requests(secret: str, token: str, url: str, count: int) -> tuple[list[bytes], list[str]]:
    requests, wamids = [], []
    for n in range(count):
        wamid = f"wamid.PEAK{token}{n:08d}"
        body = sample_webhook(wamid, NUMBER_ID, sender=str(5511700000000 + n), name=f"Contact {n}", text=f"peak {n}")
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign_meta(body, secret)}
        requests.append(loadgen.build_request(url, body, headers))
        wamids.append(wamid)
    return requests, wamids


def _inbound_load(args: tuple[str, str, str, int, float, float]) -> tuple[list[str], list[float | None]]:
    """In a process of its own (its own GIL): build the signed webhooks, wait for ``start_at`` (wall clock),
    POST them paced; returns the wamids and the time each answer was read."""
    secret, token, url, count, rate, start_at = args
    requests, wamids = _inbound_requests(secret, token, url, count)
    time.sleep(max(0.0, start_at - time.time()))
    paced = loadgen.post_paced(url, requests, rate=rate, concurrency=32, timeout=count / rate + 10)
    return wamids, paced.answered_at


class Outbound(threading.Thread):
    """Every tick: one urgent message, then ``sends_per_tick`` normal ones; the campaign at a third."""

    def __init__(self, bench: BenchRun, load: Load, company: int, conn_ids: list[int], campaign: tuple[int, int, int]):
        super().__init__(name="peak-outbound", daemon=True)
        self.bench, self.load, self.company, self.conn_ids, self.campaign = bench, load, company, conn_ids, campaign
        self.urgent: dict[int, float] = {}
        self.normal: list[int] = []
        self.campaign_started: float | None = None
        self.late_ticks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the scenario
            self.error = exc

    def _run(self) -> None:
        bench, load, ns = self.bench, self.load, self.bench.namespace
        ticks = round(load.seconds / TICK_S)
        next_at = time.monotonic()
        with bench.connect() as conn:
            for k in range(ticks):
                if k == ticks // 3:
                    self._expand()
                (urgent_id,) = data.make_messages(
                    conn, self.company, [self.conn_ids[k % len(self.conn_ids)]], 1, priority="urgent",
                    recipient_offset=7_000_000 + k,
                )  # fmt: skip
                self.urgent[urgent_id] = time.time()
                enqueue_many(bench.redis, ns, [contracts.SEND_URGENT.message(contracts.SendMessage(urgent_id))])
                ids = data.make_messages(
                    conn, self.company, self.conn_ids, load.sends_per_tick, priority="normal",
                    recipient_offset=8_000_000 + k * load.sends_per_tick,
                )  # fmt: skip
                enqueue_many(bench.redis, ns, [contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in ids])
                self.normal.extend(ids)
                next_at += TICK_S
                delay = next_at - time.monotonic()
                if delay < 0:
                    self.late_ticks += 1
                time.sleep(max(0.0, delay))

    def _expand(self) -> None:
        campaign, first, last = self.campaign
        self.campaign_started = time.time()
        enqueue_many(
            self.bench.redis,
            self.bench.namespace,
            [
                contracts.EXPAND_CAMPAIGN_BATCH.message(
                    contracts.ExpandCampaignBatch(campaign, lo, min(last, lo + SLICE - 1))
                )
                for lo in range(first, last + 1, SLICE)
            ],
        )


@dataclass(frozen=True)
class World:
    """What the run set up: the two companies, the numbers, the campaign and the fakes."""

    inbound: int
    company: int
    conn_ids: list[int]
    campaign: tuple[int, int, int]
    fake: str
    receiver: httpx.Client


def _count(conn: data.Conn, sql: str, *args: object) -> int:
    row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    load = Load.for_run(bench.quick)
    result.details["load"] = load.__dict__
    receiver_port = free_port()
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    with bench.processes() as servers:
        fake, _ = bench.start_server(servers, "peak-fake-meta", FAKE_ARGV, "/_fake/health")
        configure(fake, record_payloads=False, rate_per_second=None)
        receiver_argv = ["-m", "bench.receiver", "--port", str(receiver_port), "--latency-ms", "50"]
        servers.start("peak-receiver", receiver_argv)
        receiver = httpx.Client(base_url=receiver_url, timeout=60)
        if not wait_until(lambda: _ok(receiver), 15):
            raise RuntimeError(f"receiver did not start:\n{bench.log_tail('peak-receiver')}")
        with bench.processes(ZAPQ_META_GRAPH_URL=fake) as group:
            since = now_ms()
            masters = {name: group.start(name, argv).pid for name, argv in SERVICES.items()}
            edge_argv = ["-m", "uvicorn", "services.webhook_ingest.app:app", *UVICORN, "--workers", "1"]
            edge, edge_process = bench.start_server(group, "edge", edge_argv, "/healthz")
            masters = {"edge": edge_process.pid, **masters}
            with bench.connect() as conn:
                inbound_company = data.make_company(conn, "peak-inbound")
                conn.execute(
                    "INSERT INTO connections (company_id, name, provider, status, phone_number_id, access_token) "
                    "VALUES (%s, 'peak-inbound', 'meta', 'active', %s, %s)",
                    (inbound_company, NUMBER_ID, data.STORED_TOKEN),
                )
                company = data.make_company(conn, "peak-outbound")
                conn_ids = [cid for cid, _ in data.make_connections(conn, company, 100, prefix="6000", rate=80)]
                campaign_conn = data.make_connections(conn, company, 1, prefix="6100", rate=1_000)[0][0]
                campaign = _campaign(conn, company, campaign_conn, load.campaign, 9_000_000)
                for owner in (inbound_company, company):
                    _endpoint(conn, owner, f"{receiver_url}/crm{owner}")
            if not bench.wait_workers(bench.namespace, len(SERVICES), since):
                raise RuntimeError(f"services did not boot:\n{bench.log_tail('message-sender')}")
            result.mark("boot + data")
            world = World(inbound_company, company, conn_ids, campaign, fake, receiver)
            _measure(bench, result, load, masters, group, f"{edge}/webhooks/meta", world)
        receiver.close()


def _measure(
    bench: BenchRun,
    result: ScenarioResult,
    load: Load,
    masters: dict[str, int],
    group: ProcessGroup,
    url: str,
    world: World,
) -> None:
    pids = {name: server_pids(master) for name, master in masters.items()}
    cpu = {name: cpu_seconds(p) for name, p in pids.items()}
    redis_cpu, pg_cpu, before = redis_cpu_s(bench), postgres_cpu_s(), counters(bench)
    outbound = Outbound(bench, load, world.company, world.conn_ids, world.campaign)
    count = round(load.inbound_per_s * load.seconds)
    # The generator builds its requests first (a few seconds for 60,000), then starts on the agreed instant.
    started = time.time() + (2.0 if bench.quick else 12.0)
    inbound_args = (bench.settings().meta_app_secret, bench.token, url, count, load.inbound_per_s, started)
    with multiprocessing.get_context("spawn").Pool(1) as pool, PeakRss(list(masters.values())) as rss:
        inbound = pool.apply_async(_inbound_load, (inbound_args,))
        time.sleep(max(0.0, started - time.time()))
        outbound.start()
        wamids, answered_at = inbound.get(timeout=load.seconds + 60)
        outbound.join(timeout=load.seconds + 30)
        load_ended = time.time()
        result.mark("load")
        if outbound.error is not None:
            raise RuntimeError(f"the outbound load failed: {outbound.error!r}")
        accepted = {w: at for w, at in zip(wamids, answered_at, strict=True) if at is not None}
        # The sends not yet seen finished: each poll looks only at those (a count over all 60,600 ids took Postgres
        # 1.3 s a poll — a fifth of its CPU in the drain went to the bench's own question).
        unfinished = [*outbound.urgent, *outbound.normal]

        def settled() -> bool:
            with bench.connect() as conn:
                processed = _count(
                    conn, "SELECT count(*) FROM messages WHERE company_id = %s AND direction = 'in'", world.inbound
                )
                if unfinished:
                    done = {row[0] for row in conn.execute(
                        "SELECT id FROM messages WHERE id = ANY(%b::bigint[]) AND status IN ('sent', 'failed')",
                        (unfinished,),
                    )}  # fmt: skip
                    unfinished[:] = [i for i in unfinished if i not in done]
            return processed >= len(accepted) and not unfinished

        drained = wait_until(settled, load.drain_s, interval=0.5)
        settled_at = time.time()
        cpu_used = {name: cpu_seconds(p) - cpu[name] for name, p in pids.items()}
        redis_used, pg_used = redis_cpu_s(bench) - redis_cpu, postgres_cpu_s() - pg_cpu
        after = counters(bench)
        events_counted: list[int] = []
        wait_until(
            lambda: _events_delivered(bench, world, settled_at, events_counted),
            max(1.0, settled_at + load.drain_s - time.time()),
            0.5,
        )
        events_at = time.time()
    group.stop(grace=10)  # the counts below are a snapshot: nothing may send or store meanwhile
    result.mark("drain")
    names = {pid: name for name, members in pids.items() for pid in members}
    peaks: dict[str, float] = {}
    for peak in rss.result():
        name = names.get(peak.pid, f"pid {peak.pid}")
        peaks[name] = max(peaks.get(name, 0.0), round(peak.mb, 1))
    sends = httpx.get(f"{world.fake}/_fake/sends", timeout=120).json()
    _report(
        bench, result, load, outbound, accepted, len(answered_at), sends, world,
        timing={"started": started, "load_ended": load_ended, "settled": settled_at, "drained": drained,
                "events_done": events_at},
        usage={"cpu_s": cpu_used, "redis_cpu_s": redis_used, "postgres_cpu_s": pg_used, "peak_rss_mb": peaks,
               "counters": {name: after[name] - before[name] for name in after}},
    )  # fmt: skip


def _events_delivered(bench: BenchRun, world: World, before: float, counted: list[int]) -> bool:
    """True once the receiver has as many deliveries as there are events created before ``before``.

    The events are counted again only once the receiver has reached the last count (``counted``, kept between
    polls): a count over the run's ~200,000 events took Postgres ~130 ms a poll, while the receiver's is free."""
    by_path = world.receiver.get("/_bench/stats").json()["by_path"]
    delivered = sum(int(by_path.get(f"/crm{c}", 0)) for c in (world.inbound, world.company))
    if counted and delivered < counted[0]:
        return False
    with bench.connect() as conn:
        events = _count(
            conn, "SELECT count(*) FROM events WHERE company_id = ANY(%s) AND created_at < to_timestamp(%s)",
            [world.inbound, world.company], before,
        )  # fmt: skip
    counted[:] = [events]
    return delivered >= events


def _report(
    bench: BenchRun,
    result: ScenarioResult,
    load: Load,
    outbound: Outbound,
    accepted: dict[str, float],
    posted: int,
    sends: list[dict[str, Any]],
    world: World,
    *,
    timing: dict[str, Any],
    usage: dict[str, Any],
) -> None:
    refs = Counter(str(s["client_ref"]) for s in sends)
    arrival = {str(s["client_ref"]): float(s["received_at"]) for s in sends}
    urgent_ms = [(arrival[str(i)] - at) * 1000 for i, at in outbound.urgent.items() if str(i) in arrival]
    normal_times = [arrival[str(i)] for i in outbound.normal if str(i) in arrival]
    with bench.connect() as conn:
        campaign_ids = [
            int(r[0]) for r in conn.execute("SELECT id FROM messages WHERE campaign_id = %s", (world.campaign[0],))
        ]
        mine = (world.company,)
        sent_ids = [
            int(r[0]) for r in conn.execute("SELECT id FROM messages WHERE company_id = %s AND status = 'sent'", mine)
        ]
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM messages WHERE company_id = %s GROUP BY status", mine).fetchall()
        )
        # the start of the ingest transaction that stored the message (its message.received event's created_at)
        stored = dict(
            conn.execute(
                "SELECT data->>'external_id', extract(epoch FROM created_at) FROM events "
                "WHERE company_id = %s AND type = 'message.received'",
                (world.inbound,),
            ).fetchall()
        )
        # when each urgent message was claimed (its last claim: a retried one is claimed again)
        claimed = dict(
            conn.execute(
                "SELECT id, extract(epoch FROM sending_at) FROM messages WHERE id = ANY(%s) AND sending_at IS NOT NULL",
                (list(outbound.urgent),),
            ).fetchall()
        )
        inbound_rows = _count(
            conn, "SELECT count(*) FROM messages WHERE company_id = %s AND direction = 'in'", world.inbound
        )
        events = {
            f"evt_{int(r[0]):016x}"
            for r in conn.execute(
                "SELECT id FROM events WHERE company_id = ANY(%s) AND created_at < to_timestamp(%s)",
                ([world.inbound, world.company], timing["settled"]),
            )
        }
    claim_ms = [(float(claimed[i]) - at) * 1000 for i, at in outbound.urgent.items() if i in claimed]
    to_fake_ms = [
        (arrival[str(i)] - float(claimed[i])) * 1000 for i in outbound.urgent if i in claimed and str(i) in arrival
    ]
    campaign_times = sorted(arrival[str(i)] for i in campaign_ids if str(i) in arrival)
    stored_ms = [(float(stored[w]) - at) * 1000 for w, at in accepted.items() if w in stored]
    paths = {f"/crm{world.inbound}", f"/crm{world.company}"}
    received = world.receiver.get("/_bench/received").json()
    delivered = Counter(webhook_id for path, webhook_id, _ in received if path in paths)
    seconds = timing["settled"] - timing["started"]
    lost_sends = sum(1 for i in sent_ids if refs[str(i)] == 0)
    result.details.update(
        timing={k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()},
        inbound={"posted": posted, "accepted": len(accepted), "stored": len(stored_ms),
                 "inbound_rows": inbound_rows, "late_ticks_outbound": outbound.late_ticks},
        outbound={"urgent": len(outbound.urgent), "normal": len(outbound.normal), "campaign_rows": len(campaign_ids),
                  "campaign_sent": len(campaign_times), "statuses": statuses},
        fakes={"sends_recorded": len(sends), "sent_twice": sum(1 for n in refs.values() if n > 1),
               "sent_rows_without_record": lost_sends, "events_before_drain_end": len(events),
               "delivered": len(delivered),
               "events_never_delivered": len(events - set(delivered)),
               "events_delivered_twice": sum(1 for n in delivered.values() if n > 1)},
        usage=usage,
        cpu_percent={name: round(100 * s / seconds, 1) for name, s in usage["cpu_s"].items()},
        urgent_ms=sorted(round(x, 1) for x in urgent_ms),
        urgent_claim_ms=sorted(round(x, 1) for x in claim_ms),
        urgent_claim_to_send_ms=sorted(round(x, 1) for x in to_fake_ms),
    )  # fmt: skip
    fakes = result.details["fakes"]
    nan = float("nan")
    result.add(Figure("urgent enqueue → send p99", percentile(urgent_ms, 0.99) if urgent_ms else nan, "ms",
                      target=Target("<=", 1_000), note="send = the fake Graph API's arrival"))  # fmt: skip
    result.add(Figure("urgent enqueue → send p50", percentile(urgent_ms, 0.5) if urgent_ms else nan, "ms"))
    for name, values in (("enqueue → claim", claim_ms), ("claim → send", to_fake_ms)):
        for share in (0.5, 0.99):
            result.add(Figure(f"urgent {name} p{share * 100:.0f}", percentile(values, share) if values else nan, "ms"))
    result.add(Figure("inbound accepted → stored p99", percentile(stored_ms, 0.99) if stored_ms else nan, "ms",
                      note="stored = start of the ingest transaction"))  # fmt: skip
    result.add(Figure("inbound accepted/s (paced)", len(accepted) / load.seconds, "req/s",
                      target=Target(">=", 0.99 * load.inbound_per_s)))  # fmt: skip
    result.add(Figure("normal sends/s", span_rate(normal_times), "sends/s",
                      target=Target(">=", 0.95 * load.sends_per_tick / TICK_S)))  # fmt: skip
    campaign_window = (timing["load_ended"] - outbound.campaign_started) if outbound.campaign_started else None
    campaign_rate = (
        sum(1 for t in campaign_times if t <= timing["load_ended"]) / campaign_window if campaign_window else None
    )
    result.add(Figure("campaign sends/s while the load ran", campaign_rate, "sends/s"))
    result.add(Figure("sends recorded twice at the fake", fakes["sent_twice"], "", target=Target("<=", 0)))
    result.add(Figure("'sent' rows the fake never saw", fakes["sent_rows_without_record"], "", target=Target("<=", 0)))
    result.add(Figure("accepted webhooks not stored", len(accepted) - len(stored_ms), "", target=Target("<=", 0)))
    result.add(
        Figure(
            "events (created by the drain's end) not delivered by then",
            fakes["events_never_delivered"],
            "",
            target=Target("<=", 0),
        )
    )
    result.add(Figure("events delivered twice", fakes["events_delivered_twice"], ""))
    for name, mb in sorted(usage["peak_rss_mb"].items()):
        cpu_pct = result.details["cpu_percent"].get(name)
        result.add(Figure(f"peak RSS {name} (CPU {cpu_pct} %)", mb, "MB", target=Target("<=", 150)))
    result.add(Figure("Redis CPU (shared server)", 100 * usage["redis_cpu_s"] / seconds, "%"))
    result.add(Figure("Postgres CPU (all postgres processes, shared)", 100 * usage["postgres_cpu_s"] / seconds, "%"))
