"""Helpers of the fault-injection suite: owned Redis / Postgres instances, subprocess env, polling, rows.

A test that stops Redis or Postgres owns an instance of its own on a free port (the machine's shared ones
are never touched). Every child process runs in its own session, so a SIGKILL of its process group takes
Dramatiq's forked workers with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.migrate import upgrade
from libs.db.models import Connection, Direction, Message, MessageStatus, Provider
from libs.ops.demo import sample_webhook
from libs.ops.processes import ROOT, ProcessGroup, free_port
from libs.whatsapp.signature import sign_meta
from tests.sending.conftest import make_company_connection

PG_BIN = Path(os.environ.get("ZAPQ_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
NUMBER_ID = "106540352242922"

#: The SIGKILL test's queue, its run ledger and the hash (under the namespace) its workers report to.
FAULT_RUNS_QUEUE = "fault-runs"
FAULT_RUNS_TABLE = "CREATE TABLE IF NOT EXISTS fault_runs (job int NOT NULL, pid int NOT NULL)"
FAULT_BROKER_IDS = "fault:broker-ids"


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> float:
    """Poll state owned by other processes until ``predicate()``; returns the seconds it took.

    ``what`` names the wait in the failure message (a callable is asked only then, for the state at the end).
    """
    start = time.monotonic()
    stop = threading.Event()
    while not predicate():
        if time.monotonic() - start > timeout:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described}")
        stop.wait(interval)
    return time.monotonic() - start


def dramatiq_argv(module: str, *options: str) -> list[str]:
    """``-m dramatiq <module> <options>`` for :meth:`ProcessGroup.start` (which adds the interpreter)."""
    return ["-m", "dramatiq", module, *options]


def uvicorn_argv(app: str, port: int) -> list[str]:
    """``-m uvicorn <app>`` on 127.0.0.1:``port``, without access logs (they carry query strings)."""
    return ["-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


def logs(group_dir: Path, lines: int = 30) -> str:
    """The tail of every log in ``group_dir``, for assertion messages."""
    parts = []
    for log in sorted(group_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and everything in its process group (Dramatiq forks its workers), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


class Group(ProcessGroup):
    """A :class:`ProcessGroup` whose children are named uniquely (a restarted worker keeps its old log)."""

    def start(self, name: str, argv: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` logging to ``<log_dir>/<name>-<n>.log``."""
        return super().start(f"{name}-{len(self.children)}", argv)

    @property
    def path(self) -> Path:
        """The directory of the children's logs."""
        assert self.log_dir is not None
        return self.log_dir


class RedisInstance:
    """A ``redis-server`` of the test's own, with AOF (``appendfsync everysec``), restartable on its port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (replaying its AOF) and wait until it answers PING."""
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_until(lambda: self._pings(client), timeout=15, what=f"redis on port {self.port}")
        finally:
            client.close()

    def _pings(self, client: redis.Redis) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def shutdown(self) -> None:
        """``redis-cli shutdown``: the AOF is fsynced before the server exits (never ``NOSAVE``)."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=15, check=False)
        assert self.process is not None
        self.process.wait(timeout=15)

    def kill(self) -> None:
        """Stop the server whatever its state (finalizer)."""
        if self.process is not None and self.process.poll() is None:
            kill_group(self.process)


@contextlib.contextmanager
def own_redis() -> Iterator[RedisInstance]:
    """A started :class:`RedisInstance` in a temp dir, killed and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="zapq-fault-redis-"))
    instance = RedisInstance(root)
    try:
        instance.start()
        yield instance
    finally:
        instance.kill()
        shutil.rmtree(root, ignore_errors=True)


class PostgresInstance:
    """A throw-away Postgres cluster on a free port, run as the ``postgres`` OS user when we are root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/zapq_fault"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout}\n{done.stderr}")

    def initdb(self) -> None:
        """Create the cluster (trust auth)."""
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>`` and wait until it is down."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def own_postgres() -> Iterator[PostgresInstance]:
    """A migrated :class:`PostgresInstance`, stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="zapq-fault-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    instance = PostgresInstance(root)
    try:
        instance.initdb()
        instance.start()
        upgrade(instance.url)
        yield instance
    finally:
        with contextlib.suppress(RuntimeError):
            instance.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def subprocess_env(**overrides: str) -> dict[str, str]:
    """Extra env of the children: this session's ZAPQ_* come from ``os.environ``; unbuffered output."""
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **overrides}


def make_connection(db: Database, *, phone_number_id: str = NUMBER_ID, token: str = "fake-meta-token") -> int:
    """A company and an active Meta connection; returns the connection id."""
    return make_company_connection(db, provider=Provider.META, phone_number_id=phone_number_id, access_token=token)[1]


def signed_webhook(app_secret: str) -> tuple[str, bytes, dict[str, str]]:
    """A fresh Meta inbound-text webhook: its wamid, body and signed headers."""
    wamid = f"wamid.FAULT{uuid.uuid4().hex.upper()}"
    body = sample_webhook(wamid, NUMBER_ID)
    headers = {"content-type": "application/json", "x-hub-signature-256": sign_meta(body, app_secret)}
    return wamid, body, headers


def post_webhook(client: httpx.Client, base: str, app_secret: str) -> tuple[str, int, int | None]:
    """POST one signed webhook; ``(wamid, HTTP status or 0 on a transport error, webhook id)``."""
    wamid, body, headers = signed_webhook(app_secret)
    try:
        response = client.post(f"{base}/webhooks/meta", content=body, headers=headers)
    except httpx.HTTPError:
        return wamid, 0, None
    webhook_id = response.json().get("id") if response.status_code == 200 else None
    return wamid, response.status_code, webhook_id


def log_count(log_dir: Path, text: str) -> int:
    """Lines containing ``text`` across every log in ``log_dir``."""
    return sum(log.read_text(errors="replace").count(text) for log in log_dir.glob("*.log"))


def queued_texts(db: Database, connections: list[int], first: int, count: int, *, prefix: str) -> list[int]:
    """Queued outbound texts to distinct recipients (``1555<prefix><n>``), spread over ``connections``; their ids."""
    with db.session() as session:
        company = dict(
            session.execute(select(Connection.id, Connection.company_id).where(Connection.id.in_(connections))).all()
        )
        rows = [
            Message(
                company_id=company[connections[n % len(connections)]],
                connection_id=connections[n % len(connections)],
                direction=Direction.OUTBOUND,
                status=MessageStatus.QUEUED,
                recipient=f"1555{prefix}{n:04d}",
                body=f"text {n}",
            )
            for n in range(first, first + count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]
