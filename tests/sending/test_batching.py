"""The sender's batched round trips: claims, records and throttle reservations of many sends at once (the batching
primitive itself: ``tests/test_batching.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from libs.db.engine import Database
from libs.db.models import CampaignStatus, MessageStatus
from libs.sending import store
from libs.sending.send import SenderContext, record_sent_batch
from libs.sending.throttle import GRANTED, WAIT
from tests.sending.conftest import (
    campaign_counters,
    execute,
    make_campaign,
    make_connection,
    make_messages,
    messages,
    on_loop,
)


def execute_scalar(db: Database, sql: str, **params: Any) -> Any:
    """The one value ``sql`` selects."""
    with db.session() as session:
        return session.execute(text(sql), params).scalar_one()


def test_an_id_asked_for_twice_in_one_claim_is_claimed_once(db: Database, context: SenderContext) -> None:
    company, connection = make_connection(db)
    one, two = make_messages(db, company, connection, ["16505550001", "16505550002"])
    claims = on_loop(store.claim_many(context.pool, [one, two, one], 30))
    assert claims[0] is not None and claims[0]["id"] == one
    assert claims[1] is not None and claims[1]["id"] == two
    assert claims[2] is None  # the second caller sees it taken, as a concurrent job would
    assert {m.status for m in messages(db, [one, two])} == {MessageStatus.SENDING}


def test_a_batch_record_counts_campaigns_and_applies_early_statuses(db: Database, context: SenderContext) -> None:
    # Given three messages being sent, two of them in a campaign, and a "delivered" that arrived early
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, CampaignStatus.RUNNING)
    ids = make_messages(db, company, connection, ["16505550001", "16505550002"], campaign_id=campaign)
    ids += make_messages(db, company, connection, ["16505550003"])
    execute(db, "UPDATE messages SET status = 'sending' WHERE id = ANY(:ids)", ids=ids)
    execute(
        db,
        "INSERT INTO pending_statuses (external_id, status, occurred_at) VALUES ('wamid.B', 'delivered', now())",
    )
    # When their sends are recorded in one batch
    results = on_loop(
        record_sent_batch(
            context.pool, [(ids[0], "wamid.A", None), (ids[1], "wamid.B", None), (ids[2], "wamid.C", None)]
        )
    )
    assert results == [None, None, None]
    # Then each has its provider id and is sent (the early status applied), and the campaign counted both
    rows = {m.id: m for m in messages(db, ids)}
    assert [(rows[i].external_id, rows[i].status) for i in ids] == [
        ("wamid.A", MessageStatus.SENT),
        ("wamid.B", MessageStatus.DELIVERED),
        ("wamid.C", MessageStatus.SENT),
    ]
    assert all(rows[i].sent_at is not None for i in ids)
    assert campaign_counters(db, campaign) == {"sent": 2, "failed": 0}
    assert execute_scalar(db, "SELECT delivered_count FROM campaigns WHERE id = :id", id=campaign) == 1
    # And recording the same batch again (a redelivered job) changes nothing
    on_loop(record_sent_batch(context.pool, [(ids[0], "wamid.A", None), (ids[1], "wamid.B", None)]))
    assert campaign_counters(db, campaign)["sent"] == 2
    assert [m.status for m in messages(db, ids[:2])] == [MessageStatus.SENT, MessageStatus.DELIVERED]


def test_a_batch_record_that_fails_is_retried_one_by_one(db: Database, context: SenderContext) -> None:
    # Given two sends being recorded, one with a provider id the database refuses (longer than its column)
    company, connection = make_connection(db)
    good, bad = make_messages(db, company, connection, ["16505550001", "16505550002"])
    execute(db, "UPDATE messages SET status = 'sending' WHERE id = ANY(:ids)", ids=[good, bad])
    # When they are recorded in one batch
    results = on_loop(record_sent_batch(context.pool, [(good, "wamid.GOOD", None), (bad, "wamid." + "x" * 300, None)]))
    # Then the good one is recorded and only the bad one reports an error
    assert results[0] is None and isinstance(results[1], Exception)
    rows = {m.id: m for m in messages(db, [good, bad])}
    assert (rows[good].status, rows[good].external_id) == (MessageStatus.SENT, "wamid.GOOD")
    assert rows[bad].status == MessageStatus.SENDING


def test_reservations_of_one_turn_share_one_script_call(
    db: Database, context: SenderContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttle = context.throttle
    calls: list[int] = []
    script = throttle._script

    async def counted(*, keys: list[str], args: list[Any]) -> Any:
        calls.append(len(keys) // len(throttle.keys(0, "")))
        return await script(keys=keys, args=args)

    monkeypatch.setattr(throttle, "_script", counted)

    async def reserve_three() -> list[tuple[int, int, int]]:
        return list(
            await asyncio.gather(
                throttle.reserve(9_001, "16505550001", 10),
                throttle.reserve(9_001, "16505550002", 10),
                throttle.reserve(9_002, "16505550001", 10),
            )
        )

    first, second, other = on_loop(reserve_three())
    # One script call served all three, in order: the second send of connection 9001 must wait ~100 ms
    assert calls == [3]
    assert first == (GRANTED, 0, 0) and other == (GRANTED, 0, 0)
    assert second[0] == WAIT and 50 <= second[1] <= 100
