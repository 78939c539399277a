"""Every Redis client zapq builds comes from here: one Redis at ``ZAPQ_REDIS_URL``, or the primary of a Sentinel set.

With ``ZAPQ_REDIS_SENTINELS`` set (``host:port,host:port,...``) the clients ask the sentinels for the current
primary of ``ZAPQ_REDIS_SENTINEL_MASTER`` on every new connection. After a failover:

* a connection to the dead primary fails (refused, reset): the command is retried on a new connection, which
  asks the sentinels again — once they have promoted a replica, the new primary answers;
* a connection to a primary that was demoted to a replica answers writes with ``READONLY``: redis-py's
  Sentinel connection drops it and raises ``ConnectionError`` (retried the same way), and the broker counts a
  ``ReadOnlyError`` that still escapes as Redis being unavailable
  (:data:`libs.redis_broker.REDIS_UNAVAILABLE`): a transient outage, never a job's fault.

In Sentinel mode the database number, user name and password of the data nodes come from ``ZAPQ_REDIS_URL``
(its host and port are ignored) or from ``ZAPQ_REDIS_PASSWORD``; the sentinels' own password from
``ZAPQ_REDIS_SENTINEL_PASSWORD``.

Nothing else in ``libs`` or ``services`` calls ``redis.Redis(...)`` or ``from_url``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from libs.settings import Settings

#: Attempts of a command after its connection failed (each on a new connection, asking the sentinels again).
RETRIES = 5
#: Longest wait between two attempts (seconds); the first is 20 ms, doubling.
RETRY_CAP_S = 0.5
#: Timeouts of the questions to a sentinel (seconds): a dead sentinel must not stall a reconnect.
SENTINEL_TIMEOUT_S = 1.0


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=RETRY_CAP_S, base=0.02)


def identity(settings: Settings) -> tuple[str, ...]:
    """What names the Redis a process talks to (the same value → the same broker may be reused)."""
    if settings.redis_sentinels:
        return ("sentinel", settings.redis_sentinels, settings.redis_sentinel_master, settings.redis_namespace)
    return (settings.redis_url, settings.redis_namespace)


def _node_kwargs(settings: Settings) -> dict[str, Any]:
    """Database, user name and password of the data nodes in Sentinel mode (from the URL and the settings)."""
    url = urlsplit(settings.redis_url)
    kwargs: dict[str, Any] = {"db": int(url.path.lstrip("/") or 0)}
    if url.username:
        kwargs["username"] = unquote(url.username)
    if url.password:
        kwargs["password"] = unquote(url.password)
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    return kwargs


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def redis_client(settings: Settings, *, connect_timeout: float = 5, timeout: float = 30) -> redis.Redis:
    """A Redis client (hiredis parser when installed) of the single Redis or of the Sentinel set's primary.

    A command whose connection failed is tried again on a new one, up to ``RETRIES`` times with a short
    back-off, before it raises.
    """
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "health_check_interval": 30,
        "retry": Retry(_backoff(), RETRIES),
    }
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **common)
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
    client: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=redis.Redis, **_node_kwargs(settings), **common
    )
    return client


def async_redis_client(settings: Settings, *, connect_timeout: float = 5, timeout: float = 30) -> aioredis.Redis:
    """An asyncio Redis client of the single Redis or of the Sentinel set's primary; retries as :func:`redis_client`."""
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "retry": AsyncRetry(_backoff(), RETRIES),
    }
    if not settings.redis_sentinels:
        return aioredis.Redis.from_url(settings.redis_url, **common)
    sentinel = AsyncSentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_kwargs(settings))
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master, redis_class=aioredis.Redis, **_node_kwargs(settings), **common
    )
    return client
