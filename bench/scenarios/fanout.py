"""``fanout``: one campaign's recipients expanded into message rows and ``messages.low`` sends.

The recipients are inserted with one ``INSERT … SELECT generate_series``; ``dramatiq services.campaign_runner
-p 2 -t 4`` is started and booted first; then the ``EXPAND_CAMPAIGN_BATCH`` jobs (slices of 1,000 recipient
ids) are enqueued and the clock runs until every message row exists and every send is waiting, in
``messages.low`` or in its company's fair lane (``LLEN`` + the lanes' backlog counter). No message-sender
runs. There is no Dramatiq counterpart to compare with; the baseline of the rate is the floor of the same
work done directly from the bench process for 10,000 recipients — one ``INSERT … SELECT`` of the rows from
the recipients, then ``enqueue_many`` of their ids in chunks of 1,000.
"""

from __future__ import annotations

import time

from bench import data
from bench.harness import BenchRun, now_ms, wait_until
from bench.procfs import PeakRss, cpu_seconds, worker_pids
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from libs import contracts
from libs.campaigns.lanes import Lanes
from libs.enqueue import enqueue_many

SLICE = 1_000
#: Recipients of the floor measurement (a rate; the whole 100,000 would cost ~25 s of the time budget).
FLOOR_RECIPIENTS = 10_000


def _campaign(conn: data.Conn, company: int, connection: int, recipients: int, offset: int) -> tuple[int, int, int]:
    """A running text campaign with ``recipients`` recipients; returns (campaign id, first, last recipient id)."""
    row = conn.execute(
        "INSERT INTO campaigns (company_id, connection_id, name, status, content_type, body, recipients_count) "
        "VALUES (%s, %s, 'bench', 'running', 'text', 'Hi {name}, your code is {code}', %s) RETURNING id",
        (company, connection, recipients),
    ).fetchone()
    assert row is not None
    campaign = int(row[0])
    row = conn.execute(
        """
        WITH ins AS (
            INSERT INTO campaign_recipients (campaign_id, recipient, variables)
            SELECT %(campaign)s, '+55' || (13000000000 + %(offset)s + g)::text,
                   jsonb_build_object('name', 'Contact ' || g, 'code', g)
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        SELECT min(id), max(id) FROM ins
        """,
        {"campaign": campaign, "offset": offset, "count": recipients},
    ).fetchone()
    assert row is not None
    return campaign, int(row[0]), int(row[1])


def _floor(bench: BenchRun, campaign: int) -> float:
    """Seconds for the same rows and sends done directly: one INSERT … SELECT, then bulk enqueues."""
    started = time.perf_counter()
    with bench.connect() as conn:
        row = conn.execute(
            """
            WITH ins AS (
                INSERT INTO messages (company_id, connection_id, campaign_id, direction, priority, status,
                                      recipient, type, body, payload)
                SELECT k.company_id, k.connection_id, k.id, 'out', 'low', 'queued', r.recipient, 'text',
                       'Hi ' || (r.variables->>'name') || ', your code is ' || (r.variables->>'code'), '{}'::jsonb
                FROM campaign_recipients r JOIN campaigns k ON k.id = r.campaign_id
                WHERE r.campaign_id = %s
                RETURNING id
            )
            SELECT array_agg(id) FROM ins
            """,
            (campaign,),
        ).fetchone()
    ids = row[0] if row and row[0] else []
    namespace = bench.sub_namespace("floor")
    for start in range(0, len(ids), SLICE):
        enqueue_many(
            bench.redis,
            namespace,
            (contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in ids[start : start + SLICE]),
        )
    return time.perf_counter() - started


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    n = 2_000 if bench.quick else 100_000
    floor_n = min(n, FLOOR_RECIPIENTS)
    deadline = 4.0 if bench.quick else 10.0
    processes = "1" if bench.quick else "2"
    ns = bench.namespace
    result.details.update(recipients=n, slice=SLICE, processes=processes, threads=4)
    lanes = Lanes(ns)

    def waiting() -> int:
        return bench.llen(f"{ns}:{contracts.MESSAGES_LOW}") + lanes.backlog(bench.redis)

    with bench.processes() as group:
        since = now_ms()
        runner = group.start(
            "campaign-runner", ["-m", "dramatiq", "services.campaign_runner", "-p", processes, "-t", "4"]
        )
        with bench.connect() as conn:  # while the runner boots
            company = data.make_company(conn)
            ((connection, _),) = data.make_connections(conn, company, 1, prefix="4000")
            campaign, first, last = _campaign(conn, company, connection, n, 0)
            floor_campaign, _, _ = _campaign(conn, company, connection, floor_n, 0)
        if not bench.wait_workers(ns, int(processes), since):
            raise RuntimeError(f"campaign runner did not boot:\n{bench.log_tail('campaign-runner')}")
        pids = worker_pids(runner.pid)
        cpu = cpu_seconds(pids)
        with PeakRss([runner.pid]) as rss:
            started = time.time()
            enqueue_many(
                bench.redis,
                ns,
                (
                    contracts.EXPAND_CAMPAIGN_BATCH.message(
                        contracts.ExpandCampaignBatch(campaign, lo, min(last, lo + SLICE - 1))
                    )
                    for lo in range(first, last + 1, SLICE)
                ),
            )
            done = wait_until(lambda: waiting() >= n, deadline)
            finished = time.time()
            queued = waiting()
            cpu_ms = 1000 * (cpu_seconds(pids) - cpu) / max(1, queued)
    with bench.connect() as conn:
        row = conn.execute("SELECT count(*) FROM messages WHERE campaign_id = %s", (campaign,)).fetchone()
    rows = int(row[0]) if row else 0
    floor_s = _floor(bench, floor_campaign)
    result.details.update(
        message_rows_at_end=rows,
        queued_sends_at_deadline=queued,
        floor_recipients=floor_n,
        floor_seconds=round(floor_s, 2),
    )
    elapsed = finished - started
    # The 10 s target is for 100,000 recipients; a --quick run is held to the same rate.
    result.add(
        Figure(
            f"{n:,} recipients → rows + queued sends",
            elapsed if done else TIMEOUT,
            "s",
            target=Target("<=", 10 * n / 100_000),
        )
    )
    label = "expansion rate" if done else f"expansion rate within the {deadline:.0f}-s deadline ({queued:,}/{n:,})"
    result.add(Figure(label, queued / elapsed, "msgs/s", floor_n / floor_s, Target(">=", 10_000)))
    result.add(Figure("campaign worker CPU per message", cpu_ms, "ms"))
    result.add(Figure("campaign worker peak RSS", rss.max_mb(), "MB", target=Target("<=", 200)))
