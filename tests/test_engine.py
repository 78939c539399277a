"""The edge's checkout check: a healthy idle connection costs no round trip, a dead one is caught."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from libs.db.engine import Database, check_if_closed
from libs.settings import Settings


def test_a_terminated_backend_fails_the_check_and_a_live_one_passes(settings: Settings, db: Database) -> None:
    async def scenario() -> None:
        # Given two idle connections, the backend of one terminated by the server
        live = await psycopg.AsyncConnection.connect(settings.libpq_url, autocommit=True)
        doomed = await psycopg.AsyncConnection.connect(settings.libpq_url, autocommit=True)
        try:
            with psycopg.connect(settings.libpq_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (doomed.info.backend_pid,))
            # When each is checked out
            deadline = asyncio.get_running_loop().time() + 5
            while True:  # the termination notice reaches the socket asynchronously
                try:
                    await check_if_closed(doomed)
                except psycopg.OperationalError:
                    break
                assert asyncio.get_running_loop().time() < deadline, "a terminated backend passed the check"
                await asyncio.sleep(0.01)
            # Then the live one passes and still answers; the dead one was refused (above)
            await check_if_closed(live)
            assert await (await live.execute("SELECT 1")).fetchone() == (1,)
            # And a closed connection is refused without touching the socket
            await live.close()
            with pytest.raises(psycopg.OperationalError):
                await check_if_closed(live)
        finally:
            await live.close()
            await doomed.close()

    asyncio.run(scenario())
