"""The Redis client factory: one Redis from the URL, or the primary of a Sentinel set named by the settings."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from libs.broker import build_broker
from libs.redis_clients import async_redis_client, identity, redis_client
from libs.settings import Settings, SettingsError, load_settings, parse_sentinels

SENTINELS = "10.0.0.1:26379, sentinel-2:26380,[::1]:26381"


def test_parse_sentinels_reads_host_port_pairs() -> None:
    assert parse_sentinels(SENTINELS) == [("10.0.0.1", 26379), ("sentinel-2", 26380), ("::1", 26381)]
    assert parse_sentinels("") == []


@pytest.mark.parametrize("bad", ["sentinel-1", "sentinel-1:", ":26379", "host:port", "host:70000"])
def test_a_bad_sentinel_address_is_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(SettingsError, match=r"ZAPQ_REDIS_SENTINELS.*bad sentinel address"):
        load_settings(redis_sentinels=bad)


def test_without_sentinels_the_clients_talk_to_the_url(settings: Settings) -> None:
    client = redis_client(settings)
    try:
        assert client.ping()
        assert not isinstance(client.connection_pool, SentinelConnectionPool)
    finally:
        client.close()


def test_with_sentinels_the_clients_ask_the_sentinels_for_the_named_primary(settings: Settings) -> None:
    own = settings.model_copy(
        update={
            "redis_sentinels": SENTINELS,
            "redis_sentinel_master": "orders",
            "redis_url": "redis://:url-secret@ignored:1/3",
            "redis_sentinel_password": "sentinel-secret",
        }
    )
    sync = redis_client(own)
    pool = sync.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "orders"
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "url-secret"
    manager = pool.sentinel_manager
    asked = [(s.get_connection_kwargs()["host"], s.get_connection_kwargs()["port"]) for s in manager.sentinels]
    assert asked == parse_sentinels(SENTINELS)
    assert manager.sentinels[0].get_connection_kwargs()["password"] == "sentinel-secret"
    asynchronous = async_redis_client(own.model_copy(update={"redis_password": "node-secret"}))
    assert isinstance(asynchronous, aioredis.Redis)
    assert isinstance(asynchronous.connection_pool, AsyncSentinelPool)
    assert asynchronous.connection_pool.connection_kwargs["password"] == "node-secret"
    assert identity(own) != identity(settings)


def test_the_broker_of_a_sentinel_set_fails_as_an_outage_when_no_sentinel_answers(settings: Settings) -> None:
    own = settings.model_copy(update={"redis_sentinels": "127.0.0.1:1", "redis_sentinel_master": "zapq"})
    broker = build_broker(own)
    with pytest.raises(redis.ConnectionError):  # MasterNotFoundError: a connection error, retried as an outage
        broker.client.ping()
