"""Container probes: a real worker process keeps its heartbeat fresh; a killed one fails the probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libs.ops import probe
from libs.ops.processes import ROOT, ProcessGroup
from libs.settings import Settings


def test_check_reports_missing_fresh_and_stale(tmp_path: Path) -> None:
    directory = str(tmp_path)
    assert probe.check(directory, "worker", 30)[0] is False
    probe.touch(directory, "worker")
    assert probe.check(directory, "worker", 30) == (True, "1 worker process(es) alive")
    healthy, reason = probe.check(directory, "worker", 30, now=time.time() + 60)
    assert not healthy and "silent for" in reason


def test_heartbeat_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    probe.heartbeat_file(str(tmp_path), "worker", int(dead.stdout)).touch()
    healthy, reason = probe.check(str(tmp_path), "worker", 30)
    assert not healthy and "no running worker" in reason


@pytest.mark.timeout(90)
def test_real_worker_passes_probe_until_killed(tmp_path: Path, settings: Settings, migrated: str) -> None:
    env = {"ZAPQ_HEARTBEAT_DIR": str(tmp_path)}
    group = ProcessGroup(env=env)
    with group.running():
        worker = group.start("worker", ["-m", "dramatiq", "services.campaign_runner", "-p", "1", "-t", "1"])
        deadline = time.monotonic() + 45
        while not list(tmp_path.glob("zapq-worker-*.alive")) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)  # waiting for an external process to boot, bounded
        cli = [sys.executable, "-m", "libs.ops.probe", "worker"]
        ok = subprocess.run(cli, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    failed = subprocess.run(cli, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "no running worker" in failed.stderr
