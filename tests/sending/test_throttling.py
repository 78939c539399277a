"""Throughput: the provider's limit, our own per-connection schedule, the pair limit, and tier priority."""

from __future__ import annotations

import itertools
from typing import Any

import dramatiq

from libs import contracts
from libs.db.engine import Database
from libs.db.models import MessageStatus
from libs.enqueue import enqueue_many
from libs.errors import ProviderRateLimited, RateLimited
from libs.middleware.deadletter import FAILURES
from libs.sending.send import SenderContext
from libs.sending.throttle import Throttle, ThrottleConfig
from libs.settings import Settings
from tests.helpers import drain
from tests.sending.conftest import (
    Outcomes,
    configure,
    dead_letters,
    enqueue,
    execute,
    make_connection,
    make_messages,
    message,
    messages,
    sends,
)

#: Slack for loopback HTTP jitter (on a loaded 2-core box) when comparing the fake's receive times.
JITTER_S = 0.05


def _sent_once_without_charged_attempts(db: Database, outcomes: Outcomes, ids: list[int]) -> None:
    rows = messages(db, ids)
    assert {(r.status, r.attempts) for r in rows} == {(MessageStatus.SENT, 1)}
    assert not [a for a in outcomes.attempts if a.failed]
    successes = [a for a in outcomes.attempts if a.exception is None]
    assert sorted(a.message_id for a in successes) == ids
    assert all(FAILURES not in a.options for a in successes)
    assert dead_letters(db) == []


def test_provider_throughput_limit_defers_without_charging_attempts(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given a number Meta lets send 4 messages a second, and 6 messages for it (our own limit is 80/s)
    configure(fake_meta, rate_per_second=4)
    company, connection = make_connection(db, rate=80)
    ids = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(6)])
    # When their jobs run
    enqueue(broker, ids)
    drain(broker, worker)
    # Then the bursts over the limit were refused with 130429 and deferred
    throttled = [a for a in outcomes.attempts if isinstance(a.exception, ProviderRateLimited)]
    assert throttled and {a.exception.code for a in throttled} == {130429}  # type: ignore[union-attr]
    # And every message was sent once, with one attempt charged and no failure counted on its job
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == ids
    _sent_once_without_charged_attempts(db, outcomes, ids)


def test_connection_rate_spaces_sends_without_provider_refusals(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given a connection limited to 10 messages a second, and 30 messages for it at once
    company, connection = make_connection(db, rate=10)
    ids = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(30)])
    # When their jobs run
    enqueue(broker, ids)
    drain(broker, worker)
    # Then no 1-second window saw more than 10 sends (one more allowed for HTTP jitter on a loaded machine)
    times = sorted(s["received_at"] for s in sends(fake_meta))
    assert len(times) == 30
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 11, busiest
    assert times[-1] - times[0] >= 2.5  # 2.9 s by the schedule; unthrottled they would take a few ms
    # And the provider never throttled us, nothing failed, and no attempt was charged for waiting
    assert not [a for a in outcomes.attempts if isinstance(a.exception, ProviderRateLimited)]
    _sent_once_without_charged_attempts(db, outcomes, ids)


def test_pair_limit_spaces_sends_to_one_recipient(
    db: Database, broker: Any, context: SenderContext, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given a pair limit of one message per 500 ms to the same recipient
    context.throttle = Throttle(
        context.throttle.client, context.throttle.namespace, ThrottleConfig(pair_interval_ms=500, pair_burst=1)
    )
    company, connection = make_connection(db)
    same = make_messages(db, company, connection, ["16505559999"] * 3)
    others = make_messages(db, company, connection, ["16505550001", "16505550002"])
    # When all their jobs run at once
    enqueue(broker, same + others)
    drain(broker, worker)
    # Then the three messages to one recipient went out at least 500 ms apart
    accepted = sends(fake_meta)
    times = sorted(s["received_at"] for s in accepted if s["to"] == "16505559999")
    assert len(times) == 3
    assert all(later - earlier >= 0.5 - JITTER_S for earlier, later in itertools.pairwise(times))
    # And held back by deferrals (ours, not Meta's), never by failures
    deferred = [a for a in outcomes.attempts if isinstance(a.exception, RateLimited)]
    assert len({a.message_id for a in deferred}) >= 2 and {a.message_id for a in deferred} <= set(same)
    assert all("pair" in str(a.exception) for a in deferred)
    _sent_once_without_charged_attempts(db, outcomes, sorted(same + others))


def test_meta_pair_limit_backs_off_4_to_the_x_per_recipient(
    db: Database, broker: Any, context: SenderContext, fake_meta: str, worker: dramatiq.Worker, outcomes: Outcomes
) -> None:
    # Given Meta refusing the next two sends with 131056 (too many messages to one recipient)
    configure(fake_meta, forced_errors=[131056, 131056])
    company, connection = make_connection(db)
    [first] = make_messages(db, company, connection, ["16505559999"])
    # When a message to that recipient is sent
    enqueue(broker, [first])
    outcomes.wait(lambda o: sum(1 for a in o.of(first) if isinstance(a.exception, ProviderRateLimited)) >= 2)
    # Then it backed off 4^X s by the pair's hits in a row: 1 s after the first refusal, 4 s after the second
    refusals = [a.exception for a in outcomes.of(first) if isinstance(a.exception, ProviderRateLimited)]
    assert [(e.code, e.delay_ms) for e in refusals] == [(131056, 1_000), (131056, 4_000)]
    # And while the pair backs off, another message to the same recipient waits without asking Meta,
    # and a message to another recipient of the same number goes out at once
    [same, other] = make_messages(db, company, connection, ["16505559999", "16505550001"])
    enqueue(broker, [same, other])
    drain(broker, worker)
    assert [a.exception for a in outcomes.of(other)] == [None]
    held = [a.exception for a in outcomes.of(same) if a.exception is not None]
    assert held and all(isinstance(e, RateLimited) and not isinstance(e, ProviderRateLimited) for e in held)
    assert all("pair" in str(e) for e in held)
    # And every message was sent once; after the success the pair starts over at X = 0
    assert sorted(int(s["client_ref"]) for s in sends(fake_meta)) == [first, same, other]
    assert {r.status for r in messages(db, [first, same, other])} == {MessageStatus.SENT}
    configure(fake_meta, forced_errors=[131056])
    [again] = make_messages(db, company, connection, ["16505559999"])
    enqueue(broker, [again])
    drain(broker, worker)
    refused = [a.exception for a in outcomes.of(again) if isinstance(a.exception, ProviderRateLimited)]
    assert [e.delay_ms for e in refused] == [1_000]


def test_urgent_message_overtakes_a_backlog_of_campaign_traffic(
    db: Database,
    broker: Any,
    settings: Settings,
    context: SenderContext,
    fake_meta: str,
    worker: dramatiq.Worker,
    outcomes: Outcomes,
) -> None:
    # Given 300 low-tier messages queued for one connection, being sent at 20/s
    context.throttle = Throttle(context.throttle.client, context.throttle.namespace, ThrottleConfig(max_hold_ms=1_000))
    company, connection = make_connection(db, rate=20)
    low = make_messages(db, company, connection, [f"1650555{i:04d}" for i in range(300)], priority="low")
    backlog = [contracts.SEND_LOW.message(contracts.SendMessage(message_id)) for message_id in low]
    enqueue_many(broker.client, settings.redis_namespace, backlog)  # as campaign expansion does: all at once
    outcomes.wait(lambda o: sum(1 for a in o.attempts if a.exception is None) >= 10)
    # When an urgent message for the same connection is enqueued
    [urgent] = make_messages(db, company, connection, ["16505551234"], priority="urgent", body="your code: 1234")
    enqueued_at = enqueue(broker, [urgent], tier="urgent")
    outcomes.wait(lambda o: any(a.exception is None for a in o.of(urgent)))
    row = message(db, urgent)
    assert row.status == MessageStatus.SENT and row.sending_at is not None
    # Then it was taken for sending within 1.5 s of being enqueued
    claimed_at = row.sending_at.timestamp()
    assert claimed_at - enqueued_at < 1.5
    # And once taken it overtook the whole backlog: only sends already past the gate (a few) went out
    # between its claim and its own send
    after = sorted((s for s in sends(fake_meta) if s["received_at"] >= enqueued_at), key=lambda s: s["received_at"])
    position = [s["client_ref"] for s in after].index(str(urgent))
    before_claim = sum(1 for s in after if s["received_at"] < claimed_at)
    assert position - before_claim <= 20 + 2, (position, before_claim)
    assert position < 30, position  # sends in the 1.5 s before its claim, at 20/s, plus those few
    assert len(sends(fake_meta)) < 100  # most of the 300 were still waiting
    # (the rest of the backlog is not this test's business: cancel it so the worker drains quickly)
    execute(db, "UPDATE messages SET status = 'cancelled' WHERE priority = 'low' AND status IN ('queued', 'sending')")
    drain(broker, worker)
