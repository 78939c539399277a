"""Sender fixtures: fake providers on loopback, the sender pointed at them, and a probe of job outcomes.

Every test here runs the real message-sender actors on the shared broker with a real ``Worker`` against
real Redis and Postgres; providers are the fake servers of ``tests/fakes`` over real HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import dramatiq
import httpx
import pytest
import redis
from dramatiq import Middleware
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from sqlalchemy import text

from libs import contracts
from libs.db.engine import Database
from libs.db.models import (
    Campaign,
    CampaignStatus,
    Company,
    Connection,
    ConnectionStatus,
    DeadLetter,
    Direction,
    Message,
    MessageStatus,
    Provider,
)
from libs.errors import Defer
from libs.middleware.policy import RetryPolicy
from libs.middleware.retry import RetryMiddleware
from libs.secrets import Secrets
from libs.sending import runtime as sender_runtime
from libs.sending import send as send_module
from libs.sending.send import SenderContext
from libs.settings import Settings, load_settings
from tests.fakes.evolution import DEFAULT_API_KEY, DEFAULT_INSTANCE, EvolutionFakeConfig
from tests.fakes.evolution import create_app as create_evolution_app
from tests.fakes.meta import DEFAULT_TOKEN, MetaFakeConfig, create_app
from tests.fakes.server import running_app

T = TypeVar("T")

#: Retry policy of the send queues in tests that retry: the production shape, 30x faster.
FAST_RETRY = RetryPolicy(attempts=5, kind="exponential", base_ms=100)
#: How long a test waits for an expected job outcome before failing.
WAIT_S = 15.0


def _flush(client: redis.Redis, namespace: str) -> None:
    # One KEYS call: the same work inside Redis as a SCAN loop, without hundreds of round trips.
    keys = cast("list[bytes]", client.keys(f"{namespace}:*"))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture
def broker(services: Any, settings: Settings) -> Iterator[Any]:
    """The shared broker with this session's namespace flushed before and after the test.

    As ``tests/conftest.py``'s fixture, listing the keys in one call: on a Redis shared with benchmarks
    (hundreds of thousands of foreign keys) its SCAN loop costs about a second per flush, twice per test.
    """
    _flush(services.client, settings.redis_namespace)
    yield services
    _flush(services.client, settings.redis_namespace)


@pytest.fixture(scope="session")
def meta_server() -> Iterator[str]:
    """One fake Graph API server for the session (reset before each test that uses it)."""
    with running_app(create_app(MetaFakeConfig())) as url:
        yield url


@pytest.fixture(scope="session")
def evolution_server() -> Iterator[str]:
    """One fake Evolution API server for the session (reset before each test that uses it)."""
    with running_app(create_evolution_app(EvolutionFakeConfig())) as url:
        yield url


@pytest.fixture
def fake_meta(meta_server: str) -> str:
    """A fake Graph API in its start-up state (no sends, no forced errors); configure it with POST /_fake/config."""
    httpx.post(f"{meta_server}/_fake/reset").raise_for_status()
    return meta_server


@pytest.fixture
def fake_evolution(evolution_server: str) -> str:
    """A fake Evolution API (Baileys bridge) in its start-up state, with one open instance, ``main``."""
    httpx.post(f"{evolution_server}/_fake/reset").raise_for_status()
    return evolution_server


@pytest.fixture
def sender(settings: Settings, fake_meta: str, broker: Any) -> Iterator[Any]:
    """The message-sender's resources, pointed at the fake Graph API (rebuilt per test)."""
    import services.message_sender as service

    original = service.sender.settings
    service.sender.settings = settings.model_copy(update={"meta_graph_url": fake_meta})
    service.sender._context = None
    service.sender._lock = None  # an asyncio.Lock binds to the event loop of the worker that used it
    yield service.sender
    service.sender.settings = original
    service.sender._context = None
    service.sender._lock = None


@pytest.fixture(autouse=True)
def short_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held messages (inactive connection, paused campaign) and unconfirmed sends are looked at again quickly."""
    monkeypatch.setattr(sender_runtime, "HOLD_POLL_S", 0.05)
    monkeypatch.setattr(send_module, "RECHECK_S", 0.2)


@pytest.fixture
def fast_retries(broker: Any) -> Iterator[RetryPolicy]:
    """The send queues retry after 100, 200, 400, 800 ms (5 attempts) instead of 3, 6, 12, 24 s."""
    [middleware] = [m for m in broker.middleware if isinstance(m, RetryMiddleware)]
    queues = (contracts.MESSAGES_URGENT, contracts.MESSAGES, contracts.MESSAGES_LOW)
    saved = {q: middleware.policies.get(q) for q in queues}
    for queue in queues:
        middleware.policies[queue] = FAST_RETRY
    yield FAST_RETRY
    for queue, policy in saved.items():
        if policy is None:
            middleware.policies.pop(queue, None)
        else:
            middleware.policies[queue] = policy


def on_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the running worker's event loop (where the sender's resources live)."""
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None, "start the worker first"
    return loop_thread.run_coroutine(coroutine)


@pytest.fixture
def context(sender: Any, worker: dramatiq.Worker) -> SenderContext:
    """The sender's per-process context, created on the worker's loop before any job runs (tests tune it)."""
    ctx: SenderContext = on_loop(sender.context())
    return ctx


# --- a probe of what happened to each send job ---------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One processed delivery of a send job: its message row id, the exception it ended with, its options."""

    message_id: int
    queue: str
    exception: BaseException | None
    options: dict[str, Any]

    @property
    def deferred(self) -> bool:
        """Ended with a deferral (no attempt consumed)."""
        return isinstance(self.exception, Defer)

    @property
    def failed(self) -> bool:
        """Ended with a failure that consumes an attempt."""
        return self.exception is not None and not self.deferred


class Outcomes(Middleware):
    """Records every processed send job; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self._changed = threading.Condition()

    def after_process_message(
        self, broker: Any, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        """Note the outcome of a send job."""
        if message.actor_name not in {c.actor_name for c in contracts.SEND_BY_TIER.values()}:
            return
        attempt = Attempt(int(message.kwargs["message_id"]), message.queue_name, exception, dict(message.options))
        with self._changed:
            self.attempts.append(attempt)
            self._changed.notify_all()

    def of(self, message_id: int) -> list[Attempt]:
        """The attempts of one message's jobs, in order."""
        with self._changed:
            return [a for a in self.attempts if a.message_id == message_id]

    def wait(self, predicate: Callable[[Outcomes], bool], timeout: float = WAIT_S) -> None:
        """Block until ``predicate(self)`` holds (re-checked after every job), or fail after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"condition not reached within {timeout} s; attempts: {self.attempts}")

    def wait_deferred(self, message_id: int, reason: str, count: int = 1) -> None:
        """Block until ``message_id`` was deferred ``count`` times with ``reason`` in the deferral's text."""
        self.wait(lambda o: sum(1 for a in o.of(message_id) if a.deferred and reason in str(a.exception)) >= count)


@pytest.fixture
def outcomes(broker: Any) -> Iterator[Outcomes]:
    """An :class:`Outcomes` probe on the shared broker for the length of the test."""
    probe = Outcomes()
    broker.add_middleware(probe)
    yield probe
    broker.middleware.remove(probe)


# --- helpers ---------------------------------------------------------------------------------------------------


def configure(url: str, **config: Any) -> None:
    """Change the fake Graph API's behaviour."""
    httpx.post(f"{url}/_fake/config", json=config).raise_for_status()


def sends(url: str) -> list[dict[str, Any]]:
    """Every send the fake accepted."""
    return list(httpx.get(f"{url}/_fake/sends").json())


#: The secret columns of a connection, stored encrypted (as the API stores them).
SECRET_FIELDS = ("access_token", "bridge_api_key", "webhook_secret")


def make_company_connection(db: Database, **connection: Any) -> tuple[int, int]:
    """A company and an active connection with the given fields (secrets in clear: stored encrypted under this
    session's key; ``service_window`` off unless given); returns their ids."""
    secrets = Secrets(load_settings().secrets_key_list)
    for name in SECRET_FIELDS:
        if connection.get(name) is not None:
            connection[name] = secrets.encrypt(connection[name])
    with db.session() as session:
        company = Company(name="Acme")
        session.add(company)
        session.flush()
        # free-form sends to numbers that never wrote: the service window is off unless a test turns it on
        connection.setdefault("service_window", "off")
        row = Connection(company_id=company.id, status=ConnectionStatus.ACTIVE, **connection)
        session.add(row)
        session.flush()
        return company.id, row.id


def make_connection(
    db: Database, *, phone_number_id: str = "106540352242922", rate: int = 80, token: str = DEFAULT_TOKEN
) -> tuple[int, int]:
    """A company and a Meta connection; returns their ids."""
    return make_company_connection(
        db, provider=Provider.META, phone_number_id=phone_number_id, access_token=token, rate_per_second=rate
    )


def make_baileys_connection(
    db: Database, bridge_url: str, *, instance: str = DEFAULT_INSTANCE, api_key: str = DEFAULT_API_KEY
) -> tuple[int, int]:
    """A company and a Baileys-bridge connection to the fake Evolution API; returns their ids."""
    return make_company_connection(
        db, provider=Provider.BAILEYS, bridge_url=bridge_url, bridge_instance=instance, bridge_api_key=api_key
    )


def make_messages(
    db: Database,
    company_id: int,
    connection_id: int,
    recipients: list[str],
    priority: str = "normal",
    body: str | None = "hello",
    **columns: Any,
) -> list[int]:
    """Queued outbound messages (extra ``columns`` set on each); returns their ids."""
    with db.session() as session:
        rows = [
            Message(
                company_id=company_id,
                connection_id=connection_id,
                direction=Direction.OUTBOUND,
                priority=priority,
                status=MessageStatus.QUEUED,
                recipient=r,
                body=body,
                **columns,
            )
            for r in recipients
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def make_campaign(db: Database, company_id: int, connection_id: int, status: CampaignStatus) -> int:
    """A campaign in ``status``; returns its id."""
    with db.session() as session:
        row = Campaign(company_id=company_id, connection_id=connection_id, name="spring", status=status)
        session.add(row)
        session.flush()
        return row.id


def enqueue(broker: Any, message_ids: list[int], tier: str = "normal") -> float:
    """Enqueue one send job per message on ``tier``'s queue; returns the time of the first enqueue."""
    started = time.time()
    for message_id in message_ids:
        contracts.SEND_BY_TIER[tier].send(contracts.SendMessage(message_id), broker=broker)
    return started


def message(db: Database, message_id: int) -> Message:
    """One message row, detached."""
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None
        session.expunge(row)
        return row


def messages(db: Database, message_ids: list[int]) -> list[Message]:
    """Message rows in id order, detached."""
    with db.session() as session:
        rows = session.query(Message).filter(Message.id.in_(message_ids)).order_by(Message.id).all()
        session.expunge_all()
        return rows


def dead_letters(db: Database) -> list[DeadLetter]:
    """Every dead letter, oldest first, detached."""
    with db.session() as session:
        rows = session.query(DeadLetter).order_by(DeadLetter.id).all()
        session.expunge_all()
        return rows


def connection_status(db: Database, connection_id: int) -> tuple[ConnectionStatus, str | None]:
    """A connection's status and reason."""
    with db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return row.status, row.status_reason


def campaign_counters(db: Database, campaign_id: int) -> dict[str, int]:
    """A campaign's sent and failed counters."""
    with db.session() as session:
        row = session.get(Campaign, campaign_id)
        assert row is not None
        return {"sent": row.sent_count, "failed": row.failed_count}


def execute(db: Database, sql: str, **params: Any) -> None:
    """Run one SQL statement in its own transaction (what an API call or an operator would do)."""
    with db.session() as session:
        session.execute(text(sql), params)


def eventually(predicate: Callable[[], bool], timeout: float = WAIT_S, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it holds (for state outside the worker, e.g. a fake's log), or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(interval)  # a poll interval, not a guess at how long the work takes
