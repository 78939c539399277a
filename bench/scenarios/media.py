"""``media``: one media-fetcher process downloading 1 MB inbound files from the fake Meta at 100 ms latency.

A fake Graph API (``tests.fakes.meta``, every answer 100 ms late) holds one 1 MB JPEG under a media id; N
inbound image messages referencing it are inserted; ``dramatiq services.media_fetcher -p 1 -t 1`` is started
and booted; then N ``fetch_media`` jobs are enqueued and the clock runs until N files are stored (media rows).
Each job resolves the id (``GET /{media-id}``, 100 ms), downloads the URL with the token (100 ms + 1 MB),
checks size and SHA-256 and keeps the file in a local media directory. Targets (issue 17): ≥ 50 files/s
with the process's RSS ≤ 200 MB (files are streamed through spool files, never whole in memory).
"""

from __future__ import annotations

import shutil
import time

import httpx
import orjson

from bench import data
from bench.harness import BenchRun, now_ms, wait_until
from bench.procfs import PeakRss, cpu_seconds, worker_pids
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from libs import contracts
from libs.enqueue import enqueue_many

LATENCY_MS = 100
FILE_BYTES = 1024 * 1024
MEDIA_ID = "1013859600285441"
FAKE_ARGV = ["-m", "tests.fakes.meta", "--port", "{port}", "--latency-ms", str(LATENCY_MS), "--rate", "0"]


def _messages(conn: data.Conn, company: int, connection: int, sha256: str, count: int) -> list[int]:
    """``count`` inbound image messages referencing the fake's file."""
    image = {"id": MEDIA_ID, "mime_type": "image/jpeg", "sha256": sha256}
    payload = orjson.dumps({"media_id": MEDIA_ID, "mime_type": "image/jpeg", "raw": {"image": image}}).decode()
    row = conn.execute(
        """
        WITH ins AS (
            INSERT INTO messages (company_id, connection_id, direction, status, recipient, type, payload, external_id)
            SELECT %(company)s, %(connection)s, 'in', 'received', '5511900000000', 'image', %(payload)s::jsonb,
                   'wamid.bench-media-' || g
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        SELECT array_agg(id ORDER BY id) FROM ins
        """,
        {"company": company, "connection": connection, "payload": payload, "count": count},
    ).fetchone()
    return list(row[0]) if row and row[0] else []


def _stored(bench: BenchRun) -> int:
    with bench.connect() as conn:
        row = conn.execute("SELECT count(*) FROM media").fetchone()
    return int(row[0]) if row else 0


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    n = 200 if bench.quick else 1_000
    deadline = 30.0 if bench.quick else 60.0
    ns = bench.namespace
    media_dir = bench.log_dir / "media"
    result.details.update(files=n, file_bytes=FILE_BYTES, latency_ms=LATENCY_MS, processes=1, threads=1)
    try:
        with bench.processes() as servers:
            fake, _ = bench.start_server(servers, "fake-meta", FAKE_ARGV, "/_fake/health")
            registered = httpx.post(
                f"{fake}/_fake/media", json={"id": MEDIA_ID, "mime_type": "image/jpeg", "size": FILE_BYTES}
            ).json()
            env = {"ZAPQ_META_GRAPH_URL": fake, "ZAPQ_MEDIA_DIR": str(media_dir)}
            with bench.processes(**env) as group:
                since = now_ms()
                fetcher = group.start(
                    "media-fetcher", ["-m", "dramatiq", "services.media_fetcher", "-p", "1", "-t", "1"]
                )
                with bench.connect() as conn:  # while the fetcher boots
                    company = data.make_company(conn)
                    ((connection, _),) = data.make_connections(conn, company, 1, prefix="5000")
                    ids = _messages(conn, company, connection, registered["sha256"], n)
                if not bench.wait_workers(ns, 1, since):
                    raise RuntimeError(f"media fetcher did not boot:\n{bench.log_tail('media-fetcher')}")
                pids = worker_pids(fetcher.pid)
                cpu = cpu_seconds(pids)
                with PeakRss([fetcher.pid], interval=0.2) as rss:
                    started = time.time()
                    enqueue_many(bench.redis, ns, (contracts.FETCH_MEDIA.message(contracts.FetchMedia(i)) for i in ids))
                    done = wait_until(lambda: _stored(bench) >= n, deadline, interval=0.1)
                    finished = time.time()
                    stored = _stored(bench)
                    cpu_ms = 1000 * (cpu_seconds(pids) - cpu) / max(1, stored)
    finally:
        shutil.rmtree(media_dir, ignore_errors=True)
    elapsed = finished - started
    result.details.update(files_stored=stored, seconds=round(elapsed, 2))
    label = "1 MB files fetched and stored" if done else f"files within the {deadline:.0f}-s deadline ({stored}/{n})"
    result.add(Figure(label, stored / elapsed if stored else TIMEOUT, "files/s", target=Target(">=", 50)))
    result.add(Figure("media worker CPU per file", cpu_ms, "ms"))
    result.add(Figure("media worker peak RSS", rss.max_mb(), "MB", target=Target("<=", 200)))
