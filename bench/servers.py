"""What the shared servers spent during a run: Redis and Postgres CPU, Redis commands, Postgres writes.

Both servers serve everything on the machine, so CPU, command and WAL figures are server-wide (upper bounds
for the run's own share); commits and row writes come from ``pg_stat_database`` of the run's own database.
"""

from __future__ import annotations

from typing import Any, cast

from bench.harness import BenchRun
from bench.procfs import PROC, cpu_seconds


def postgres_cpu_s() -> float:
    """CPU seconds of every ``postgres`` process now (the server is shared: a delta is an upper bound)."""
    pids = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return cpu_seconds(pids)


def counters(bench: BenchRun) -> dict[str, float]:
    """Redis commands processed (server-wide) and this database's commits, row writes and the WAL position."""
    stats = cast(dict[str, Any], bench.redis.info("stats"))
    with bench.connect() as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    names = ("pg_commits", "pg_rows_inserted", "pg_rows_updated", "pg_rows_deleted", "wal_bytes_server_wide")
    return {"redis_commands_server_wide": float(stats["total_commands_processed"])} | {
        name: float(value) for name, value in zip(names, row, strict=True)
    }


def redis_cpu_s(bench: BenchRun) -> float:
    """The Redis server's CPU seconds (``INFO cpu``)."""
    info = cast(dict[str, Any], bench.redis.info("cpu"))
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
