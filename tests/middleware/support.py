"""Test actors and helpers for the retry / dead-letter / replay tests (shared by tests/deadletters and tests/ops).

The actors are declared once per session on the shared broker (:func:`declare_test_actors`) and report every
attempt to :data:`PROBE`, which the tests reset and read. They run on zapq's real queue names so that the
real default policies apply, under ``test_*`` actor names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.middleware import CurrentMessage
from sqlalchemy import select

from libs import contracts
from libs.db.engine import Database
from libs.db.models import DeadLetter
from libs.errors import Defer, PermanentError, RateLimited, TransientError
from libs.middleware.deadletter import DEFERS, FAILURES
from libs.middleware.policy import RetryPolicy
from libs.middleware.retry import RetryMiddleware

REPO = Path(__file__).resolve().parents[2]

#: Per-actor override used to test ``messages`` end to end quickly (0.3 → 0.6 → 1.2 → 2.4 s).
FAST_MESSAGES_POLICY = RetryPolicy(attempts=5, kind="exponential", base_ms=300)
#: Two quick tries: dead letters for the replay tests without waiting on a default policy.
FLAKY_POLICY = RetryPolicy(attempts=2, kind="fixed", base_ms=50)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a test actor as the actor saw it."""

    at: float  # time.monotonic(), for gaps
    wall: float  # time.time(), to compare with ledger timestamps
    message_id: str
    failures: int  # zq_failures on the message this attempt ran
    defers: int  # zq_defers


@dataclass
class Probe:
    """What the test actors did, and what they are told to do next."""

    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    #: key → outcomes the scripted actor plays in order ("ok" once the script runs out).
    scripts: dict[str, list[str]] = field(default_factory=dict)
    #: keys whose flaky actor now succeeds.
    fixed: set[str] = field(default_factory=set)
    defer_ms: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget everything (before each test)."""
        with self.lock:
            self.attempts.clear()
            self.scripts.clear()
            self.fixed.clear()
            self.defer_ms = 100

    def record(self, key: str) -> int:
        """Note one attempt of ``key``; returns its 1-based number."""
        message = CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        attempt = Attempt(
            at=time.monotonic(),
            wall=time.time(),
            message_id=message.message_id if message is not None else "",
            failures=options.get(FAILURES, 0),
            defers=options.get(DEFERS, 0),
        )
        with self.lock:
            self.attempts.setdefault(key, []).append(attempt)
            return len(self.attempts[key])

    def next_outcome(self, key: str) -> str:
        """The scripted actor's next move."""
        with self.lock:
            script = self.scripts.get(key) or []
            return script.pop(0) if script else "ok"

    def gaps(self, key: str) -> list[float]:
        """Seconds between consecutive attempts of ``key``."""
        times = [a.at for a in self.attempts.get(key, [])]
        return [b - a for a, b in itertools.pairwise(times)]


PROBE = Probe()


def fail_webhooks() -> None:
    """Always fails with a transient error (queue ``webhooks``: default policy 3 tries, 2 s → 4 s)."""
    n = PROBE.record("test_fail_webhooks")
    raise TransientError(f"webhook attempt {n} failed")


def fail_campaigns() -> None:
    """Always fails with an unknown exception, which counts as transient (``campaigns``: 2 tries, 5 s)."""
    n = PROBE.record("test_fail_campaigns")
    raise RuntimeError(f"campaign attempt {n} failed")


def fail_messages() -> None:
    """Always fails (``messages`` with the fast per-actor override)."""
    n = PROBE.record("test_fail_messages")
    raise TransientError(f"message attempt {n} failed")


def fail_messages_default() -> None:
    """Always fails (``messages`` with the real default policy)."""
    n = PROBE.record("test_fail_messages_default")
    raise TransientError(f"message attempt {n} failed")


def permanent_failure() -> None:
    """Fails permanently on its first attempt."""
    PROBE.record("test_permanent")
    raise PermanentError("the payload can never be handled")


def scripted(key: str) -> None:
    """Plays ``PROBE.scripts[key]``: ok, transient, defer, rate_limited, dramatiq_retry or permanent."""
    n = PROBE.record(key)
    outcome = PROBE.next_outcome(key)
    if outcome == "transient":
        raise TransientError(f"{key} attempt {n} failed")
    if outcome == "defer":
        raise Defer(PROBE.defer_ms, reason=f"{key} busy")
    if outcome == "rate_limited":
        raise RateLimited(PROBE.defer_ms, reason=f"{key} throttled")
    if outcome == "dramatiq_retry":
        raise dramatiq.Retry(f"{key} asked to retry", delay=30)
    if outcome == "permanent":
        raise PermanentError(f"{key} attempt {n} refused")


def flaky(key: str) -> None:
    """Fails (transiently) until ``key`` is in ``PROBE.fixed``."""
    n = PROBE.record(key)
    if key not in PROBE.fixed:
        raise TransientError(f"{key} attempt {n} failed")


#: actor name → (function, queue, extra actor options)
TEST_ACTORS: dict[str, tuple[Callable[..., None], str, dict[str, Any]]] = {
    "test_fail_webhooks": (fail_webhooks, contracts.WEBHOOKS, {}),
    "test_fail_campaigns": (fail_campaigns, contracts.CAMPAIGNS, {}),
    "test_fail_messages": (fail_messages, contracts.MESSAGES, {"retry_policy": FAST_MESSAGES_POLICY}),
    "test_fail_messages_default": (fail_messages_default, contracts.MESSAGES, {}),
    "test_permanent": (permanent_failure, contracts.WEBHOOKS, {}),
    "test_scripted": (scripted, contracts.WEBHOOKS, {}),
    "test_flaky": (flaky, contracts.MESSAGES, {"retry_policy": FLAKY_POLICY}),
}


def declare_test_actors(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the test actors on ``broker`` once; later calls return the same actors."""
    actors: dict[str, dramatiq.Actor[Any, Any]] = {}
    for name, (fn, queue, options) in TEST_ACTORS.items():
        existing = broker.actors.get(name)
        actors[name] = existing or dramatiq.actor(actor_name=name, queue_name=queue, broker=broker, **options)(fn)
    return actors


def retry_middleware(broker: dramatiq.Broker) -> RetryMiddleware:
    """The broker's :class:`RetryMiddleware` instance."""
    return next(m for m in broker.middleware if isinstance(m, RetryMiddleware))


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One ``broker.enqueue`` call seen by :func:`capture_enqueues`."""

    queue: str
    actor: str
    delay: int | None
    options: dict[str, Any]
    kwargs: dict[str, Any]


@contextlib.contextmanager
def capture_enqueues(broker: Any, *, max_delay_ms: int | None = None) -> Iterator[list[Enqueued]]:
    """Record every ``broker.enqueue`` call; with ``max_delay_ms``, really wait at most that long.

    The recorded delay is the one the caller asked for, so a policy's real delays can be checked on a real
    worker without waiting for them.
    """
    calls: list[Enqueued] = []
    original = broker.enqueue

    def enqueue(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        calls.append(Enqueued(message.queue_name, message.actor_name, delay, dict(message.options), message.kwargs))
        if delay is not None and max_delay_ms is not None:
            delay = min(delay, max_delay_ms)
        return original(message, delay=delay)

    broker.enqueue = enqueue
    try:
        yield calls
    finally:
        del broker.enqueue


def ledger_rows(db: Database) -> list[DeadLetter]:
    """Every dead-letter row, oldest first."""
    with db.session() as session:
        return list(session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars())


def record_entry(
    *,
    queue: str = contracts.WEBHOOKS,
    actor: str = "test_scripted",
    kwargs: dict[str, Any] | None = None,
    reason: str = "exhausted",
    error_message: str = "boom",
    failed_at: float | None = None,
) -> contracts.RecordDeadLetter:
    """A ``RecordDeadLetter`` for a fresh message, as the middleware would build it."""
    message: Message[Any] = Message(queue_name=queue, actor_name=actor, args=(), kwargs=kwargs or {}, options={})
    now = failed_at or time.time()
    return contracts.RecordDeadLetter(
        message=message.asdict(),
        reason=reason,
        error_type="libs.errors.TransientError",
        error_message=error_message,
        traceback="Traceback (most recent call last):\n  ...\nlibs.errors.TransientError: boom\n",
        attempts=3,
        first_failed_at=now - 6,
        last_failed_at=now,
    )


def to_utc(value: float) -> dt.datetime:
    """A Unix time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(value, dt.UTC)


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` (state owned by another process) until true, or fail after ``timeout`` s.

    Only for subprocess tests, where no in-process worker can be joined.
    """
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        stop.wait(interval)


class Processes:
    """Subprocesses started by one test, each in its own process group; all killed at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` with its output in ``<log_dir>/<name>.log``."""
        log = self.log_dir / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((proc, log))
        return proc

    def stop_all(self, *, grace: float = 10.0) -> None:
        """Stop every process still running, then KILL whatever is left in their groups.

        TERM goes to each main process only (Dramatiq's main passes it on to its workers): TERMing a whole
        group makes Dramatiq's main process hang.
        """
        running = [proc for proc, _ in self.started if proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc, _ in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def logs(self, lines: int = 40) -> str:
        """The tail of every log, for assertion messages."""
        parts = []
        for proc, log in self.started:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} (pid {proc.pid}, rc {proc.returncode})\n" + "\n".join(tail))
        return "\n".join(parts)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This session's environment (its ZAPQ_* namespace and database) plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def dramatiq_argv(module: str, *options: str) -> list[str]:
    """``python -m dramatiq <module> <options>`` with this interpreter."""
    return [sys.executable, "-m", "dramatiq", module, *options]
