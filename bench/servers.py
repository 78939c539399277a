"""What the shared servers spent during a run: Redis and Postgres CPU, Redis commands, Postgres writes.

Both servers serve everything on the machine, so CPU, command and WAL figures are server-wide (upper bounds
for the run's own share); commits and row writes come from ``pg_stat_database`` of the run's own database.
"""

from __future__ import annotations

import os
from typing import Any, cast

from bench.harness import BenchRun
from bench.procfs import PROC


def postgres_cpu_s() -> float:
    """CPU seconds of every ``postgres`` process now, plus the CPU of the backends that already exited
    (the postmaster's reaped children: ``cutime`` + ``cstime``), so that connections closing during a run do
    not take their CPU with them. The server is shared: a delta is an upper bound of the run's share."""
    ticks = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


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
