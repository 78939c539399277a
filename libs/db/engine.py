"""The one place Postgres pools are built, from settings, in a process's start hook (never at import time).

:func:`async_pool` for asyncio code (the API, the edge, the sender, the dispatcher) and :class:`Database` (a
SQLAlchemy engine and its sessions, for the sync workers, the scheduler, the CLI and the API's threads); both
read the same settings (``libpq_url`` / ``sqlalchemy_url``, ``database_pool_size``). The stores run the same
psycopg ``%(name)s`` SQL through either.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from libs.errors import DependencyUnavailableError
from libs.settings import Settings

#: How long a pool tries to reconnect after an outage before giving up until the next checkout (seconds).
RECONNECT_TIMEOUT_S = 5.0


async def check_if_closed(conn: AsyncConnection[Any]) -> None:
    """A checkout check that costs a ``poll``, not a round trip: an idle connection has nothing to read unless
    the server closed it (a restart, a terminated backend) or sent it something; only then does psycopg's own
    check run (one round trip), raising for a dead connection so that the pool replaces it. A profile of the
    webhook edge showed the round-trip check at about an eighth of its time (one per group commit)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def async_pool(
    settings: Settings,
    *,
    min_size: int = 1,
    timeout: float = 10.0,
    connect_timeout: int = 5,
    dict_rows: bool = False,
    check_on_checkout: bool = False,
) -> AsyncConnectionPool[Any]:
    """The one way a process opens its asyncio Postgres pool (autocommit; call ``await pool.open()``).

    ``check_on_checkout`` replaces a connection broken by an outage when it is handed out
    (:func:`check_if_closed`: for request handlers that must answer at once); reconnection attempts
    give up after a few seconds and start afresh on the next checkout instead of backing off for minutes.
    """
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": connect_timeout}
    if dict_rows:
        kwargs["row_factory"] = dict_row
    return AsyncConnectionPool(
        settings.libpq_url,
        connection_class=AsyncConnection,
        min_size=min_size,
        max_size=settings.database_pool_size,
        timeout=timeout,
        open=False,
        kwargs=kwargs,
        check=check_if_closed if check_on_checkout else None,
        reconnect_timeout=RECONNECT_TIMEOUT_S if check_on_checkout else 5 * 60.0,
    )


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """A pooled SQLAlchemy engine (psycopg 3) with pre-ping, so a restarted Postgres is survived."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


class Database:
    """The engine and session factory of one process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int | None = None) -> Database:
        """The process's database handle (``pool_size``: default ``settings.database_pool_size``)."""
        return cls.from_url(settings.sqlalchemy_url, pool_size=pool_size or settings.database_pool_size)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        """Build a database handle for ``url``."""
        return cls(make_engine(url, pool_size=pool_size))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction, committed on success; connection failures become transient errors."""
        try:
            with self.sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise DependencyUnavailableError(f"database unavailable: {type(exc.orig).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DependencyUnavailableError("database connection lost") from exc
            raise

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
