"""Pins of every Dramatiq internal zapq relies on (all used in ``libs/dramatiq_ext``, and only there).

When Dramatiq is upgraded, this file is what fails, each test naming one internal: re-read that part of Dramatiq's
source, adapt ``libs/dramatiq_ext`` (and ``libs/keys.py`` for the Redis layout), then move the version pin.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import logging
import re
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from queue import PriorityQueue
from typing import Any

import dramatiq
import dramatiq.asyncio
import dramatiq.errors
import dramatiq.middleware
import pytest
import redis
from dramatiq import Message, Worker
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.redis import _scripts as dramatiq_scripts
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.worker import ConsumerThread, WorkerThread, _WorkQueueItem

from libs import dramatiq_ext, keys
from libs.dramatiq_ext.redis import DISPATCH_TIMESTAMP
from libs.ops.processes import ROOT
from libs.redis_broker import ZapqRedisBroker
from libs.settings import Settings

PINNED = "2.2.1"


def wait_until(condition: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(settings.redis_url)
    yield connection
    connection.close()


@pytest.fixture
def namespace(client: redis.Redis) -> Iterator[str]:
    """A namespace of this test's own, emptied afterwards."""
    name = f"zapq-pin-{uuid.uuid4().hex[:8]}"
    yield name
    found = list(client.scan_iter(match=f"{name}:*", count=1000))
    if found:
        client.delete(*found)


def message(queue: str = "pin", **options: Any) -> Message[Any]:
    return Message(queue_name=queue, actor_name="pin_actor", args=(), kwargs={}, options=options)


# -- the version ------------------------------------------------------------------------------------------------


def test_dramatiq_is_the_version_these_pins_were_checked_against() -> None:
    # Given the installed Dramatiq and the pin in pyproject.toml
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # Then both are the version every pin below was read from
    assert dramatiq.__version__ == PINNED
    assert any(re.fullmatch(rf"dramatiq\[[a-z,]+\]=={re.escape(PINNED)}", dep) for dep in dependencies)


# -- the Redis broker -------------------------------------------------------------------------------------------


def test_dispatch_lua_reads_the_callers_clock_once_with_the_argv_layout_maintenance_uses() -> None:
    # Given Dramatiq's dispatch script
    source = dramatiq_scripts["dispatch"].decode()
    # Then the line zapq replaces with Redis's clock is there exactly once, and so is the ARGV layout
    # libs.dramatiq_ext.maintain passes (command, timestamp, queue, worker id, heartbeat timeout, dead message
    # TTL, do maintenance, max unpack size)
    assert source.count(DISPATCH_TIMESTAMP.decode()) == 1
    layout = ["command", "timestamp", "queue_name", "worker_id", "heartbeat_timeout", "dead_message_ttl"]
    layout += ["do_maintenance", "max_unpack_size"]
    for position, name in enumerate(layout, start=1):
        assert re.search(rf"^local {name} = ARGV\[{position}\]$", source, re.M) or name == "timestamp", name
    assert dramatiq_ext.DISPATCH.count(b"redis.call('TIME')") == 1 and DISPATCH_TIMESTAMP not in dramatiq_ext.DISPATCH


def test_redis_layout_is_the_one_the_keys_module_names(client: redis.Redis, namespace: str) -> None:
    # Given Dramatiq's own broker (not zapq's) on a namespace of its own
    broker = RedisBroker(client=client, namespace=namespace, middleware=[])
    broker.declare_queue("pin")
    names = keys.BrokerKeys(namespace)
    # When it enqueues, delays, fetches and nacks messages
    waiting = broker.enqueue(message())
    delayed = broker.enqueue(message(), delay=60_000)
    assert client.lrange(names.queue("pin"), 0, -1) == [waiting.options["redis_message_id"].encode()]
    assert client.hexists(names.messages("pin"), waiting.options["redis_message_id"])
    assert client.hexists(names.delayed_messages("pin"), delayed.options["redis_message_id"])
    [fetched] = broker.do_fetch("pin", 10)
    rid = Message.decode(fetched).options["redis_message_id"]
    # Then a fetched id sits in the worker's ack set, the worker heartbeats, and a nack moves it to the dead set
    assert client.smembers(names.acks(dramatiq_ext.worker_id(broker), "pin")) == {rid.encode()}
    assert client.zscore(names.heartbeats, dramatiq_ext.worker_id(broker)) is not None
    broker.do_nack("pin", rid)
    assert client.zscore(names.dead("pin"), rid) is not None and client.hexists(names.dead_messages("pin"), rid)
    # And queue names follow the same spelling
    assert dramatiq_ext.dq_name("pin") == "pin" + keys.DELAYED
    assert dramatiq_ext.q_name("pin" + keys.DELAYED) == dramatiq_ext.q_name("pin" + keys.DEAD) == "pin"


def test_maintenance_through_dispatch_requeues_a_dead_workers_acks(client: redis.Redis, namespace: str) -> None:
    # Given a message fetched by a worker whose heartbeat is long gone
    broker = ZapqRedisBroker(client=client, namespace=namespace, middleware=[], heartbeat_timeout=1_000)
    broker.declare_queue("pin")
    names = keys.BrokerKeys(namespace)
    sent = broker.enqueue(message())
    rid = sent.options["redis_message_id"]
    client.lpop(names.queue("pin"))
    client.sadd(names.acks("dead-worker", "pin"), rid)
    client.zadd(names.heartbeats, {"dead-worker": 0})
    # When a live worker runs maintenance (the broker's dispatch script, on Redis's clock)
    dramatiq_ext.maintain(broker, ["pin"])
    # Then the message is back in its queue and the dead worker is forgotten
    assert client.lrange(names.queue("pin"), 0, -1) == [rid.encode()]
    assert client.zscore(names.heartbeats, "dead-worker") is None
    # And this worker heartbeated on Redis's clock
    seconds, _ = client.time()
    assert abs(client.zscore(names.heartbeats, dramatiq_ext.worker_id(broker)) / 1000 - seconds) < 5


def test_requeue_moves_ids_from_this_workers_ack_set_to_the_tail(client: redis.Redis, namespace: str) -> None:
    # Given two waiting messages and one fetched by this worker
    broker = ZapqRedisBroker(client=client, namespace=namespace, middleware=[])
    broker.declare_queue("pin")
    names = keys.BrokerKeys(namespace)
    first = broker.enqueue(message()).options["redis_message_id"]
    broker.do_fetch("pin", 1)
    second = broker.enqueue(message()).options["redis_message_id"]
    # When this worker requeues the fetched one
    dramatiq_ext.requeue(broker, "pin", [first])
    # Then it waits again, after the other one, and is no longer held
    assert client.lrange(names.queue("pin"), 0, -1) == [second.encode(), first.encode()]
    assert client.scard(names.acks(dramatiq_ext.worker_id(broker), "pin")) == 0


def test_redis_consumer_state_and_hooks(client: redis.Redis, namespace: str) -> None:
    # Given the private consumer class: its constructor and the state zapq's fetch loop works on
    params = list(inspect.signature(_RedisConsumer.__init__).parameters)
    assert params == ["self", "broker", "queue_name", "prefetch", "timeout"]
    broker = ZapqRedisBroker(client=client, namespace=namespace, middleware=[])
    broker.declare_queue("pin")
    consumer = broker.consume("pin", prefetch=4, timeout=100)  # built through RedisBroker.consumer_class
    assert isinstance(consumer, dramatiq_ext.ZapqRedisConsumer) and isinstance(consumer, _RedisConsumer)
    assert (consumer.message_cache, consumer.queued_message_ids, consumer.misses) == ([], set(), 0)
    assert consumer.prefetch == dramatiq_ext.MIN_PREFETCH and consumer.timeout == 100
    # When messages wait and the consumer is iterated
    sent = [broker.enqueue(message()) for _ in range(3)]
    received = [next(consumer) for _ in range(3)]
    # Then they come out as proxies, counted outstanding until acked
    assert [m.message_id for m in received] == [m.message_id for m in sent]
    assert consumer.outstanding_message_count == 3
    for proxy in received:
        consumer.ack(proxy)
    assert consumer.outstanding_message_count == 0
    wait_until(
        lambda: client.hlen(keys.BrokerKeys(namespace).messages("pin")) == 0,
        timeout=10,
        what="the acks to be written",
    )
    consumer.close()


def test_emit_calls_only_overriding_middleware_in_dramatiqs_order_and_error_handling(
    client: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given Dramatiq's own emit_* (what zapq's broker reimplements without the no-op hooks)
    assert "getattr(middleware, signal)(self, *args, **kwargs)" in inspect.getsource(dramatiq.Broker.emit_before)
    assert "reversed(self.middleware)" in inspect.getsource(dramatiq.Broker.emit_after)
    calls: list[str] = []

    class Recording(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_process_message(self, broker: Any, message: Any) -> None:
            calls.append(f"before {self.name}")

        def after_process_message(
            self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
        ) -> None:
            calls.append(f"after {self.name}")

    class Failing(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise RuntimeError("hook failed")

        def after_process_message(
            self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
        ) -> None:
            raise dramatiq.middleware.SkipMessage("not a MiddlewareError on the after path")

    class Guard(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise dramatiq.middleware.SkipMessage("skip")

    broker = ZapqRedisBroker(client=client, namespace=namespace, middleware=[Recording("a"), Middleware()])
    # When signals are emitted: overriding middleware run, in order (reversed for after), no-op ones are skipped
    broker.emit_before("process_message", message())
    broker.emit_after("process_message", message(), result=None)
    assert calls == ["before a", "after a"]
    assert broker._overriding("before_ack", reverse=False) == []
    assert broker._overriding("before_no_such_signal", reverse=False) is None  # Dramatiq's own loop then
    # And a middleware added later is seen (the cache follows the middleware list)
    broker.add_middleware(Recording("b"))
    broker.add_middleware(Failing())
    calls.clear()
    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("process_message", message())
        broker.emit_after("process_message", message(), result=None)
    assert calls == ["before a", "before b", "after b", "after a"]
    # Then other errors are logged, not raised, like Dramatiq's; a MiddlewareError on the before path propagates
    assert sum("Unexpected failure in" in r.getMessage() for r in caplog.records) == 2
    broker.add_middleware(Guard())
    with pytest.raises(dramatiq.middleware.SkipMessage):
        broker.emit_before("process_message", message())
    broker.close()


# -- the worker -------------------------------------------------------------------------------------------------


def test_worker_state_read_and_written_by_the_fence() -> None:
    # Given a worker told to consume one queue
    worker = Worker(StubBroker(), queues={"pin"}, worker_threads=3, worker_timeout=50)
    # Then it has the state the fence reads and writes
    assert worker.consumers == {} and worker.workers == [] and isinstance(worker.work_queue, PriorityQueue)
    assert dramatiq_ext.consumed_queues(worker) == {"pin"}
    assert dramatiq_ext.thread_count(worker) == 3 and worker.worker_timeout == 50
    before = worker.queue_prefetch
    dramatiq_ext.raise_prefetch(worker, before + 10)
    assert worker.queue_prefetch == before + 10
    assert dramatiq_ext.consumed_queues(Worker(StubBroker())) is None
    # And its threads are built by _add_worker with WorkerThread's keyword arguments
    assert callable(worker._add_worker)
    params = list(inspect.signature(WorkerThread.__init__).parameters)
    assert params == ["self", "broker", "consumers", "work_queue", "worker_timeout"]


class _TakingThread(dramatiq_ext.WorkerThreadBase):
    """A worker thread running one job at a time through the fence's named operations."""

    def run(self) -> None:
        self.running = True
        while self.running:
            if self.paused:
                self.wait_paused()
                continue
            item = self.take(wait=True)
            if item is not None:
                self.process_message(dramatiq_ext.message_of(item))


def test_a_thread_factory_installed_before_boot_runs_the_jobs() -> None:
    # Given a worker whose threads are built by a factory installed in before_worker_boot
    broker = StubBroker()
    ran = threading.Event()

    @dramatiq.actor(broker=broker, queue_name="pin", actor_name="pin_job")
    def pin_job() -> None:
        ran.set()

    class Factory(Middleware):
        def before_worker_boot(self, broker: Any, worker: Any) -> None:
            dramatiq_ext.install_thread_factory(worker, _TakingThread)

    broker.add_middleware(Factory())
    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        # Then the worker runs those threads
        assert [type(thread) for thread in worker.workers] == [_TakingThread, _TakingThread]
        assert all(thread.timeout == 0.05 and not thread.paused for thread in worker.workers)
        # And a job sent is taken from the work queue, run and post-processed through them
        pin_job.send()
        assert ran.wait(10)
        broker.join("pin", timeout=10_000)
        worker.join()
        assert dramatiq_ext.jobs_held(worker) == 0
        assert len(dramatiq_ext.threads(worker)) == len(worker.consumers) + 2
    finally:
        worker.stop()


def test_fetched_ids_read_prefetch_caches_delay_queues_and_the_work_queue() -> None:
    # Given a worker with a consumer thread holding a prefetched message and a delayed one, and a queued job
    broker = StubBroker()
    worker = Worker(broker, worker_timeout=50)
    thread = ConsumerThread(broker=broker, queue_name="pin", prefetch=1, work_queue=worker.work_queue, worker_timeout=1)
    assert thread.consumer is None and isinstance(thread.delay_queue, PriorityQueue)
    assert callable(thread.post_process_message)

    class Consumer:
        message_cache = [message(redis_message_id="cached").encode(), None]

    thread.consumer = Consumer()  # type: ignore[assignment]
    worker.consumers["pin"] = thread
    proxy = dramatiq.MessageProxy(message(redis_message_id="delayed"))
    thread.delay_queue.put(_WorkQueueItem(0, proxy))
    worker.work_queue.put(_WorkQueueItem(0, dramatiq.MessageProxy(message(redis_message_id="queued"))))
    # Then every one of them is held
    assert dramatiq_ext.fetched_ids(worker) == {"cached", "delayed", "queued"}
    assert dramatiq_ext.message_of(worker.work_queue.get_nowait()).options["redis_message_id"] == "queued"
    # And a stopping consumer's prefetch is taken from it whole
    taken = dramatiq_ext.take_prefetched(thread)
    assert taken is not None and [m.options["redis_message_id"] for m in taken[1]] == ["cached"]
    assert thread.consumer.message_cache == [] and dramatiq_ext.take_prefetched(thread) is None


def test_notes_stay_on_the_delivery_and_off_the_message() -> None:
    # Given a delivery with a note
    proxy = dramatiq.MessageProxy(message())
    dramatiq_ext.note(proxy, "zq_pin", 3)
    # Then the note is read back from the proxy, and the message (what is re-enqueued) does not carry it
    assert dramatiq_ext.noted(proxy, "zq_pin") == 3 and dramatiq_ext.noted(proxy, "zq_other", "none") == "none"
    assert "zq_pin" not in proxy.options and "zq_pin" not in Message.decode(proxy.encode()).options


def test_current_message_is_per_context() -> None:
    # Given two deliveries made current in two contexts (as two asyncio tasks)
    first, second = dramatiq.MessageProxy(message()), dramatiq.MessageProxy(message())

    def current_after(proxy: Any) -> Any:
        dramatiq_ext.set_current_message(proxy)
        return CurrentMessage.get_current_message()

    # Then each context sees its own
    assert contextvars.copy_context().run(current_after, first) is first
    assert contextvars.copy_context().run(current_after, second) is second
    assert CurrentMessage.get_current_message() is None


def test_the_event_loop_thread_runs_on_the_loop_it_is_given() -> None:
    # Given Dramatiq's event loop thread started on a loop of ours
    loop = asyncio.new_event_loop()
    dramatiq_ext.start_event_loop_thread(logging.getLogger(__name__), loop)
    thread = dramatiq.asyncio.get_event_loop_thread()
    try:
        # Then coroutines run on that loop
        async def running_loop() -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

        assert thread is not None and thread.loop is loop
        assert thread.run_coroutine(running_loop()) is loop
    finally:
        if thread is not None:
            thread.stop()
            thread.join()
        dramatiq.asyncio.set_event_loop_thread(None)


def test_idle_backoff_grows_up_to_its_cap() -> None:
    # Given Dramatiq's backoff helper as the consumer uses it (misses, capped at the idle poll)
    from dramatiq.common import compute_backoff

    misses, waits = 0, []
    for _ in range(12):
        misses, wait_ms = compute_backoff(misses, max_backoff=100)
        waits.append(wait_ms)
    # Then each miss counts and no wait exceeds the cap
    assert misses == 12 and max(waits) <= 100 and waits[0] >= 5


# -- the fence --------------------------------------------------------------------------------------------------

FENCE = ROOT / "libs" / "dramatiq_ext"
#: What zapq may import from Dramatiq outside the fence: what its modules export.
PUBLIC: dict[str, set[str]] = {
    "dramatiq": set(dramatiq.__all__) - {"WorkerThread", "ConsumerThread"},  # their run loops are internals
    "dramatiq.middleware": set(dramatiq.middleware.__all__),
    "dramatiq.errors": {name for name in vars(dramatiq.errors) if not name.startswith("_")},
    "dramatiq.asyncio": set(dramatiq.asyncio.__all__),
    "dramatiq.message": {"Message"},
    "dramatiq.encoder": {"Encoder", "MessageData"},
    "dramatiq.broker": {"Broker", "MessageProxy", "Consumer"},
    "dramatiq.brokers.redis": {"RedisBroker"},
}
#: Undocumented attributes of Dramatiq's objects (brokers, consumers, workers, threads, proxies).
PRIVATE_ATTRIBUTES = {
    "__dict__",
    "_add_worker",
    "_exception",
    "_max_unpack_size",
    "_message",
    "_MESSAGE",
    "broker_id",
    "consumer_class",
    "consumer_whitelist",
    "consumers",
    "delay_prefetch",
    "delay_queue",
    "message_cache",
    "misses",
    "outstanding_message_count",
    "paused_event",
    "post_process_message",
    "queue_prefetch",
    "queued_message_ids",
    "scripts",
    "work_queue",
    "worker_threads",
    "worker_timeout",
    "workers",
}

ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr"}


def dramatiq_internals(source: str) -> list[str]:
    """``line: what`` of each use of a Dramatiq internal in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dramatiq":
            allowed = PUBLIC.get(node.module or "", set())
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name not in allowed]
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "dramatiq" and a.name not in PUBLIC
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_CALLS:
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and name.value in PRIVATE_ATTRIBUTES:
                found.append(f"{node.lineno}: {node.func.id}(…, {name.value!r})")
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE_ATTRIBUTES or node.attr.startswith("do_"):
                found.append(f"{node.lineno}: .{node.attr}")
            elif (
                isinstance(node.value, ast.Name) and node.value.id == "dramatiq" and node.attr not in PUBLIC["dramatiq"]
            ):
                found.append(f"{node.lineno}: dramatiq.{node.attr}")
    return found


def test_dramatiq_internals_are_used_in_the_fence_only() -> None:
    # Given every module of libs/ and services/ outside libs/dramatiq_ext
    paths = [
        path
        for folder in ("libs", "services")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if FENCE not in path.parents and "migrations" not in path.parts
    ]
    # Then none imports a Dramatiq internal or touches an undocumented attribute of Dramatiq's objects
    found = {str(p.relative_to(ROOT)): hits for p in paths if (hits := dramatiq_internals(p.read_text()))}
    assert found == {}


def test_the_fence_check_finds_internals() -> None:
    # Given code using internals the ways zapq once did
    source = (
        "from dramatiq.brokers.redis import RedisBroker, _RedisConsumer\n"
        "from dramatiq.common import q_name\nimport dramatiq\n"
        "def f(worker, broker, message):\n"
        "    worker._add_worker = None; broker.do_requeue('q'); dramatiq.common.q_name('q')\n"
        "    return worker.work_queue, message.__dict__, broker.scripts['dispatch']\n"
        "getattr(worker, 'consumer_whitelist', None)\n"
    )
    # Then each use is found, and the public import is not
    assert len(dramatiq_internals(source)) == 9, dramatiq_internals(source)
