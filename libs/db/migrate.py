"""Create the database if it is missing and upgrade it to the newest Alembic revision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(sqlalchemy_url: str) -> Config:
    """An Alembic config pointing at zapq's migrations and ``sqlalchemy_url`` (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return config


def ensure_database(sqlalchemy_url: str) -> bool:
    """Create the database named in the URL when it does not exist; True when it was created."""
    url = make_url(sqlalchemy_url)
    name = url.database
    if not name:
        raise ValueError("the database URL names no database")
    admin = url.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(sqlalchemy_url: str) -> None:
    """Drop the database named in the URL (tests only), disconnecting its sessions first."""
    url = make_url(sqlalchemy_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(url.database or "")))


def upgrade(sqlalchemy_url: str, revision: str = "head", *, secrets_keys: Sequence[str] | None = None) -> None:
    """Create the database if needed, then run migrations up to ``revision``.

    ``secrets_keys`` (``settings.secrets_key_list``) are the keys revisions that encrypt credentials use;
    without them such a revision reads the settings from the environment.
    """
    ensure_database(sqlalchemy_url)
    config = alembic_config(sqlalchemy_url)
    if secrets_keys is not None:
        config.attributes["secrets_keys"] = list(secrets_keys)
    command.upgrade(config, revision)
