"""Fair lanes on the real Redis: round-robin order, the buffer, the backlog counter, cleanup of empty lanes."""

from __future__ import annotations

from typing import Any

from libs import contracts
from libs.campaigns.lanes import Lanes
from libs.settings import Settings


def _sends(*message_ids: int) -> list[Any]:
    return [contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in message_ids]


def _queued_message_ids(client: Any, namespace: str) -> list[int]:
    """The ``message_id`` argument of every send waiting in ``messages.low``, head first."""
    import orjson

    key = f"{namespace}:{contracts.MESSAGES_LOW}"
    ids = client.lrange(key, 0, -1)
    payloads = client.hmget(f"{key}.msgs", ids) if ids else []
    return [orjson.loads(p)["kwargs"]["message_id"] for p in payloads]


def test_feed_takes_each_company_in_turn_up_to_the_buffer(broker: Any, settings: Settings) -> None:
    # Given company 1 with 20 sends waiting in its lane, then company 2 with 4
    lanes = Lanes(settings.redis_namespace, buffer=14, quantum=3)
    assert lanes.push(broker.client, 1, _sends(*range(100, 120))) == 20
    assert lanes.push(broker.client, 2, _sends(*range(200, 204))) == 4
    assert lanes.backlog(broker.client) == 24
    # When the feeder runs
    assert lanes.feed(broker.client) == 14
    # Then the queue holds 3 of one, 3 of the other, in turn, and company 1 alone once company 2 ran dry
    assert _queued_message_ids(broker.client, settings.redis_namespace) == [
        *range(100, 103),
        *range(200, 203),
        *range(103, 106),
        203,
        *range(106, 109),
        *range(109, 110),
    ]
    assert lanes.backlog(broker.client) == 10
    # And a full queue takes nothing more; as it empties, feeding resumes where the turn stopped
    assert lanes.feed(broker.client) == 0
    broker.client.delete(f"{settings.redis_namespace}:{contracts.MESSAGES_LOW}")
    assert lanes.feed(broker.client) == 10
    assert lanes.backlog(broker.client) == 0
    assert broker.client.llen(f"{lanes.prefix}ring") == 0 and broker.client.scard(f"{lanes.prefix}members") == 0
    # And an empty set of lanes feeds nothing, without error
    assert lanes.feed(broker.client) == 0


def test_a_company_that_returns_rejoins_the_turn_once(broker: Any, settings: Settings) -> None:
    lanes = Lanes(settings.redis_namespace, buffer=100, quantum=2)
    lanes.push(broker.client, 7, _sends(1))
    lanes.push(broker.client, 7, _sends(2))  # already in the ring: not added twice
    assert broker.client.lrange(f"{lanes.prefix}ring", 0, -1) == [b"7"]
    assert lanes.feed(broker.client) == 2
    lanes.push(broker.client, 7, _sends(3))
    assert broker.client.lrange(f"{lanes.prefix}ring", 0, -1) == [b"7"]
    assert lanes.feed(broker.client) == 1
    assert _queued_message_ids(broker.client, settings.redis_namespace) == [1, 2, 3]


def test_queue_stats_count_the_lanes_as_waiting(broker: Any, settings: Settings) -> None:
    from libs.ops.stats import queue_stats

    lanes = Lanes(settings.redis_namespace, buffer=5)
    lanes.push(broker.client, 1, _sends(*range(12)))
    lanes.feed(broker.client)
    [low] = queue_stats(broker.client, settings.redis_namespace, queues=[contracts.MESSAGES_LOW])
    assert (low.waiting, low.in_lanes) == (12, 7)


def test_a_company_of_weight_two_gets_two_quanta_per_turn(broker: Any, settings: Settings) -> None:
    lanes = Lanes(settings.redis_namespace, buffer=12, quantum=2)
    lanes.push(broker.client, 1, _sends(*range(100, 120)))
    lanes.push(broker.client, 2, _sends(*range(200, 220)), weight=2)
    assert lanes.feed(broker.client) == 12
    assert _queued_message_ids(broker.client, settings.redis_namespace) == [
        100,
        101,
        *range(200, 204),
        102,
        103,
        *range(204, 208),
    ]
