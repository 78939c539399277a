"""``free_port`` hands out ports the kernel never gives to outgoing connections, so a listener that stops
and starts again (a proxy that refuses for a while, a restarted Redis or Postgres) gets its port back."""

from __future__ import annotations

import socket

import pytest

from libs.ops import processes
from libs.ops.processes import free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    ports = {free_port() for _ in range(50)}
    assert all(1024 < port < processes._ephemeral_range_start() for port in ports)
    assert len(ports) > 40  # spread out, so two tests rarely pick the same one
    for port in list(ports)[:5]:
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_someone_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", free_port())) as listening:
        taken = listening.getsockname()[1]
        picks = iter([taken, taken, taken + 1])

        class Picks:
            def randrange(self, start: int, stop: int) -> int:
                return next(picks)

        monkeypatch.setattr(processes.random, "SystemRandom", Picks)
        assert processes.free_port() == taken + 1
