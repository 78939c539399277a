"""Engine and session factory, built from settings in a process's start hook (never at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from libs.errors import DependencyUnavailableError


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
