"""A Postgres outage during a send is a dependency outage (deferred), never a spent attempt."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from libs.errors import DependencyUnavailableError
from libs.ops.processes import free_port
from libs.secrets import DEV_SECRETS_KEY, Secrets
from libs.sending.send import SenderContext, send_message
from libs.sending.throttle import Throttle
from libs.settings import Settings


def test_unreachable_database_raises_dependency_unavailable(settings: Settings) -> None:
    async def scenario() -> None:
        pool = AsyncConnectionPool(
            f"postgresql://postgres@127.0.0.1:{free_port()}/none",
            min_size=1,
            timeout=0.5,
            open=False,
            kwargs={"connect_timeout": 1},
        )
        await pool.open(wait=False)
        client = aioredis.Redis.from_url(settings.redis_url)
        http = httpx.AsyncClient()
        ctx = SenderContext(
            pool=pool,
            http=http,
            throttle=Throttle(client, settings.redis_namespace),
            graph_url="http://127.0.0.1:9",
            api_version="v21.0",
            secrets=Secrets([DEV_SECRETS_KEY]),
        )
        try:
            with pytest.raises(DependencyUnavailableError, match="database unavailable"):
                await send_message(ctx, 1, final_attempt=False)
        finally:
            await http.aclose()
            await client.aclose()
            await pool.close()

    asyncio.run(scenario())
