"""A Redis Sentinel set of a test's own: a primary, a replica and three sentinels on loopback ports 272xx.

The data nodes run without persistence (as a cache-less broker would with ``appendonly no``): what the primary
had not yet shipped to its replica when it died is gone, which is what the outbox sweeps are for. The sentinels
take the primary for dead after ``DOWN_AFTER_MS`` and need two of three to agree (quorum 2).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.faults.support import kill_group, wait_until

MASTER = "zapq-test"
#: Ports of this helper's instances (primary, replica, sentinels): the 272xx range is the Sentinel test's own.
PRIMARY_PORT = 27201
REPLICA_PORT = 27202
SENTINEL_PORTS = (27211, 27212, 27213)
#: A primary silent this long is subjectively down (each sentinel); the failover itself follows at once.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelSet:
    """The five processes; :meth:`kill_primary` SIGKILLs the primary, :meth:`wait_promoted` waits for the switch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> str:
        """``ZAPQ_REDIS_SENTINELS`` for this set."""
        return ",".join(f"127.0.0.1:{port}" for port in SENTINEL_PORTS)

    def _spawn(self, port: int, argv: list[str]) -> None:
        log = (self.root / f"{port}.log").open("ab")
        self.processes[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _data_node(self, port: int, *extra: str) -> None:
        workdir = self.root / str(port)
        workdir.mkdir()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
        self._spawn(port, [*argv, "--appendonly", "no", "--save", "", *extra])

    def _sentinel(self, port: int) -> None:
        config = self.root / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {PRIMARY_PORT} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self._spawn(port, ["redis-server", str(config), "--sentinel"])

    def start(self) -> None:
        """Start the primary, its replica (in sync) and the sentinels (each seeing the replica and the others)."""
        self._data_node(PRIMARY_PORT)
        self._data_node(REPLICA_PORT, "--replicaof", "127.0.0.1", str(PRIMARY_PORT))
        wait_until(lambda: self._replica_synced(), timeout=15, what="the replica in sync with the primary")
        for port in SENTINEL_PORTS:
            self._sentinel(port)
        wait_until(self._sentinels_ready, timeout=20, what="three sentinels seeing the replica and each other")

    def _info(self, port: int, section: str) -> dict[str, object]:
        client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return dict(client.info(section))
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def _replica_synced(self) -> bool:
        info = self._info(REPLICA_PORT, "replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in SENTINEL_PORTS:
            client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                state = client.sentinel_master(MASTER)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def kill_primary(self) -> float:
        """SIGKILL the primary; returns when (monotonic)."""
        killed = time.monotonic()
        kill_group(self.processes.pop(PRIMARY_PORT))
        return killed

    def promoted(self) -> bool:
        """True once the replica is a primary (Sentinel promoted it)."""
        return self._info(REPLICA_PORT, "replication").get("role") == "master"

    def stop(self) -> None:
        """SIGKILL every process still running."""
        for process in self.processes.values():
            if process.poll() is None:
                kill_group(process)
        self.processes.clear()


@contextlib.contextmanager
def sentinel_set() -> Iterator[SentinelSet]:
    """A started :class:`SentinelSet` in a temp dir, killed and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="zapq-fault-sentinel-"))
    instance = SentinelSet(root)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)
