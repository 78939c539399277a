"""The BullMQ baseline of the ``core`` scenario: install, start, fill, resume, count (see ``bench/bullmq/``).

BullMQ is pinned in ``bench/bullmq/package.json`` + ``package-lock.json``. :func:`ensure_installed` runs
``npm ci`` when Node is present and the lockfile differs from the one last installed (its SHA-256 is kept in
``node_modules/.zapq-lock-sha256``); without Node (or when ``npm ci`` fails) it returns the reason, and the
scenario prints it as a skipped line instead of a figure.

Drain method, identical to the Dramatiq side's: the worker is booted first (it prints ``ready``), a warm-up
batch is drained, then the jobs are added to the *paused* queue (``fill.js … --paused``) and the bench
resumes it with the same two writes as BullMQ's own ``pause-7.lua`` resume branch (``HDEL meta paused``,
``ZADD marker 0 0``) in one ``MULTI``: every job becomes visible at that instant, as the Dramatiq side's
``RENAME``. The clock stops when ``wait`` and ``active`` are both empty (jobs carry ``removeOnComplete``,
as Dramatiq's ack deletes the payload).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import cast

import redis

from bench.harness import REDIS_URL, wait_until
from libs.ops.processes import ProcessGroup

DIRECTORY = Path(__file__).resolve().parent / "bullmq"
LOCKFILE = DIRECTORY / "package-lock.json"
STAMP = DIRECTORY / "node_modules" / ".zapq-lock-sha256"
QUEUE = "bench"
#: BullMQ's usual setting for short jobs, and the one the issue measured.
CONCURRENCY = 50


def ensure_installed(timeout: float = 180.0) -> str | None:
    """Make ``bench/bullmq/node_modules`` match the lockfile; ``None`` when ready, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "skipped: Node.js (node and npm) not found on PATH"
    digest = hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return None
    try:
        done = subprocess.run(
            # few, short retries: without a registry, fail (and skip) in seconds rather than minutes
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--fetch-retries=1", "--fetch-timeout=20000"],
            cwd=DIRECTORY,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"skipped: npm ci did not finish within {timeout:.0f} s"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"skipped: npm ci failed ({done.returncode}): {tail[0][:120]}"
    STAMP.write_text(digest + "\n")
    return None


def version() -> str:
    """The installed BullMQ version."""
    text = (DIRECTORY / "node_modules" / "bullmq" / "package.json").read_text()
    return str(json.loads(text)["version"])


def start_worker(group: ProcessGroup, name: str, prefix: str) -> subprocess.Popen[bytes]:
    """Start one Node worker (``worker.js``) in ``group``; waits until it prints ``ready``."""
    assert group.log_dir is not None
    log_path = group.log_dir / f"{name}.log"
    out = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        ["node", str(DIRECTORY / "worker.js"), REDIS_URL, prefix, QUEUE, str(CONCURRENCY)],
        cwd=DIRECTORY,
        env=group.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    group.children.append((name, process))

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"BullMQ worker exited ({process.returncode}): {log_path.read_text()[-500:]}")
        return b"ready" in log_path.read_bytes()

    if not wait_until(ready, 30):
        raise RuntimeError(f"BullMQ worker not ready within 30 s: {log_path.read_text()[-500:]}")
    return process


def fill(prefix: str, first: int, count: int, *, paused: bool) -> None:
    """Add ``count`` no-op jobs with ``Queue.addBulk`` (``fill.js``); with ``paused`` the queue is paused first."""
    argv = ["node", str(DIRECTORY / "fill.js"), REDIS_URL, prefix, QUEUE, str(first), str(count)]
    done = subprocess.run([*argv, *(["--paused"] if paused else [])], capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fill.js failed: {done.stderr.decode(errors='replace')[-500:]}")


def resume(client: redis.Redis, prefix: str) -> float:
    """Resume the paused queue (BullMQ's resume writes, atomically); returns the instant, ``time.time()``."""
    base = f"{prefix}:{QUEUE}"
    pipe = client.pipeline(transaction=True)
    pipe.hdel(f"{base}:meta", "paused")
    pipe.zadd(f"{base}:marker", {"0": 0})
    pipe.execute()
    return time.time()


def left(client: redis.Redis, prefix: str) -> int:
    """Jobs not finished yet: waiting plus active."""
    base = f"{prefix}:{QUEUE}"
    pipe = client.pipeline(transaction=False)
    pipe.llen(f"{base}:wait")
    pipe.llen(f"{base}:active")
    return sum(cast(list[int], pipe.execute()))
